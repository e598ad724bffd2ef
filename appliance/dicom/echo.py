"""C-ECHO: the verification service modalities use to test the connection."""


def handle_echo(event) -> int:
    return 0x0000
