"""Background services: loops that run beside the ways in and out while the appliance serves.

forward.py sends newly stored studies on to peers (durable jobs with retries), recycle.py moves
studies that are safe offsite out of the archive when the disk fills and fetches them back,
verify.py re-reads a sample of the archive to catch damage early. The offsite backup (backup/) and
the software update (update/) are services too, in their own packages.
"""
