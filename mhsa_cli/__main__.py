"""``python -m mhsa_cli`` runs the CLI."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while torch & co. are being imported: one line, not a traceback
    print("error: interrupted (SIGINT) while starting; nothing was done", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
