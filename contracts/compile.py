"""Compile contracts/*.sol with the pinned solcjs into contracts/compiled.json, or check that file.

    bash scripts/install_solc.sh                 # the compiler, once
    .venv/bin/python contracts/compile.py         # write contracts/compiled.json
    .venv/bin/python contracts/compile.py --check # exit 1 if the committed artifact is not what the source compiles to

The tests deploy the committed artifact, so they need no compiler; ``--check`` (run by
tests/test_ethereum_rpc.py) keeps that artifact honest. The bytecode ends in the hash of the
compiler's metadata, which covers the source text and the settings, so a changed source or
setting changes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONTRACTS = Path(__file__).resolve().parent
ARTIFACT = CONTRACTS / "compiled.json"
SOLCJS = CONTRACTS.parent / ".tools" / "solc" / "node_modules" / ".bin" / "solcjs"
SOLC_VERSION = "0.8.37"
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    # Cancun runs on anvil's default hardfork and on mainnet alike.
    "evmVersion": "cancun",
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"]}
    },
}


class CompileError(RuntimeError):
    """The compiler is missing or the source does not compile."""


def compile_contracts() -> dict:
    """{"compiler": version, "settings": ..., "contracts": {name: {"source", "abi", "bytecode", "deployed_bytecode",
    "method_identifiers"}}}; the method identifiers (signature -> selector) spare the tests a Keccak library."""
    if not SOLCJS.exists():
        raise CompileError(f"solcjs is not installed at {SOLCJS}: run bash scripts/install_solc.sh")
    version = subprocess.run([str(SOLCJS), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if not version.startswith(f"{SOLC_VERSION}+"):
        raise CompileError(f"solcjs is {version}, not {SOLC_VERSION}: run bash scripts/install_solc.sh")
    sources = {path.name: {"content": path.read_text()} for path in sorted(CONTRACTS.glob("*.sol"))}
    request = {"language": "Solidity", "sources": sources, "settings": SETTINGS}
    answer = subprocess.run(
        [str(SOLCJS), "--standard-json"], input=json.dumps(request), capture_output=True, text=True, check=True
    )
    # solcjs may print a line of its own before the JSON document.
    output = json.loads(answer.stdout[answer.stdout.index("{") :])
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise CompileError("\n".join(errors))
    contracts = {
        name: {
            "source": source,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployed_bytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "method_identifiers": compiled["evm"]["methodIdentifiers"],
        }
        for source, by_name in sorted(output["contracts"].items())
        for name, compiled in sorted(by_name.items())
    }
    return {"compiler": version, "settings": SETTINGS, "contracts": contracts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed artifact instead of writing")
    args = parser.parse_args(argv)
    try:
        compiled = compile_contracts()
    except CompileError as error:
        print(f"compile: {error}", file=sys.stderr)
        return 2
    if not args.check:
        ARTIFACT.write_text(json.dumps(compiled, indent=1, sort_keys=True) + "\n")
        print(f"wrote {ARTIFACT}")
        return 0
    committed = json.loads(ARTIFACT.read_text())
    if committed != compiled:
        differing = sorted(
            name
            for name in set(committed["contracts"]) | set(compiled["contracts"])
            if committed["contracts"].get(name) != compiled["contracts"].get(name)
        )
        print(f"compile: {ARTIFACT.name} is not what the sources compile to (differs: {differing or 'settings'})")
        return 1
    print(f"{ARTIFACT.name} matches the sources compiled with solcjs {compiled['compiler']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
