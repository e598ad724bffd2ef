"""Signed A/B updates of the appliance image (RAUC): checking bundles, installing them from
the admin page, a USB stick or the vendor's URL, and confirming or falling back after
the first boot of a new root. See image-build/README.md "Updates"."""
