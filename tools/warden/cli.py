"""The `warden` command line: a thin click layer over the warden library."""
import click


@click.group()
def main():
    """Warden: provision, run, update and audit a fleet of ESP32 devices."""


if __name__ == "__main__":
    main()
