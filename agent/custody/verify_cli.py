"""dock-verify BUNDLE [STORE]: check an exported custody bundle anywhere, no agent needed.

Exit codes: 0 the bundle (and store) verify, 1 tampering or damage found (each finding is
named), 2 the bundle cannot be read or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.custody.verifier import BundleError, BundleReport, fingerprint, verify_bundle


def _pinned(args: argparse.Namespace) -> str | None:
    if args.fingerprint:
        return str(args.fingerprint)
    if args.key is None:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(args.key.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read public key {args.key}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{args.key} is not an Ed25519 public key")
    return fingerprint(key.public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw))


def _safe(text: object) -> str:
    """A bundle is untrusted input: its strings reach the terminal with controls escaped."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in str(text))


def _text(r: BundleReport, store: Path | None) -> str:
    lines = [f"PROBLEM {_safe(f)}" for f in r.findings]
    lines += [f"note: {n}" for n in r.notes]
    what = f"{r.entries} entries, {r.checkpoints} checkpoints"
    if r.last_signed_seq is not None:
        what += f" (signed up to seq {r.last_signed_seq})"
    if store is not None:
        what += f", {r.files_checked} stored files re-hashed"
    lines.append(f"dock {_safe(r.dock_id)}  key {r.fingerprint}"
                 f" ({'pinned' if r.key_pinned else 'NOT pinned'})")
    lines.append(f"{'OK' if r.ok else 'FAILED'}: {what}, {len(r.findings)} problem(s)")
    return "\n".join(lines)


def _load(path: Path) -> dict[str, object]:
    bundle = json.loads(path.read_bytes())
    if not isinstance(bundle, dict):
        raise BundleError("the bundle is not a JSON object")
    return bundle


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dock-verify", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="file written by `dockctl ledger export`")
    p.add_argument("store", type=Path, nargs="?",
                   help="evidence store (or a copy): re-hash every file the ledger records")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--fingerprint", help="the dock's key fingerprint (SHA256:...) to trust")
    pin.add_argument("--key", type=Path, help="the dock's public key PEM (<key>.pub) to trust")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        bundle = _load(args.bundle)
        report = verify_bundle(bundle, trusted_fingerprint=_pinned(args), store=args.store)
    except (OSError, ValueError, RecursionError, BundleError) as exc:
        print(f"dock-verify: cannot read {args.bundle}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(_text(report, args.store))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
