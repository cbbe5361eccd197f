"""Create a client key: `python -m lib.keys new NAME` (or `make key NAME=...`).

Prints the new key once, and the `KEYS_FILE` stanza that holds only its SHA-256. The key
itself is stored nowhere: hand it to its user, then put the stanza in the policy file.
"""

from __future__ import annotations

import hashlib
import re
import sys

from lib.access import new_key

_USAGE = "usage: python -m lib.keys new NAME   (NAME: 1-64 of A-Z a-z 0-9 . _ -)"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def main(argv: list[str]) -> int:
    """Run the command line; return the exit status."""
    if len(argv) != 2 or argv[0] != "new" or not _NAME.match(argv[1]) or argv[1] == "anonymous":
        print(_USAGE, file=sys.stderr)
        return 2
    name, key = argv[1], new_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"New client key for {name!r}; it is shown only this once:\n\n    {key}\n")
    print("Add this to the policy file (KEYS_FILE or KEYS_TOML); it holds only the key's hash:\n")
    print(f'[keys.{name}]\nsha256 = "{digest}"\n# rpm = 60\n# daily_tokens = 1000000')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
