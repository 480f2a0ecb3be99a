"""Do the carried wheels (benchmarks/gpu_wheels.txt) resolve on the GPU machine's image?

    python benchmarks/gpu_wheels_check.py                 # offline: the lock against the image list
    python benchmarks/gpu_wheels_check.py --folder .whl   # ... and .whl/ holds exactly those wheels
    python benchmarks/gpu_wheels_check.py --installed     # on the GPU machine, after the install
    python benchmarks/gpu_wheels_check.py --print-lock .whl   # lock lines of downloaded wheels

Offline (the default, what `gpu_acceptance.sh --dry-run` runs in CI): every requirement of every
wheel in the lock, for CPython 3.12 on Linux x86-64, is met by another wheel of the lock or by a
package of the image as recorded in benchmarks/gpu_image_packages.txt (by version where the
record has one; a bare name there meets it by name, reported as unverified); every dependency
of zoo in pyproject.toml is in the image, in the lock, or declared `absent`; no wheel is
unneeded or already in the image; the wheels fit the tree's 64 MiB. `--installed` checks the
same against the versions actually installed (importlib.metadata), on the machine itself.

Errors are one line each (`gpu wheels: ...`); the exit code is 1 when there is any. Standard
library and `packaging` only: no torch, no zoo.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCK = HERE / "gpu_wheels.txt"
IMAGE = HERE / "gpu_image_packages.txt"
PYPROJECT = REPO / "pyproject.toml"
# pyproject extras whose packages the GPU machine should have (cuda12: another CUDA major).
EXTRAS = ("dev", "lm", "gen", "ray", "cuda13")
TREE_LIMIT = 64 * 2**20  # what travels to the device machine: the working tree and .whl
WHEEL_LIMIT = 48 * 2**20  # the wheels alone, when the tree's size cannot be measured


@dataclass
class Wheel:
    name: str  # canonical
    version: str
    fetch: str  # binary or sdist
    file: str
    sha256: str
    size: int
    requires: list[str] = field(default_factory=list)
    never_imported: str | None = None
    line: int = 0


@dataclass
class Lock:
    wheels: dict[str, Wheel]
    absent: dict[str, str]


def parse_lock(path: Path = LOCK) -> Lock:
    wheels: dict[str, Wheel] = {}
    absent: dict[str, str] = {}
    current: Wheel | None = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip() if raw.lstrip().startswith("#") else raw.rstrip()
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        if raw[:1].isspace():  # a line of the current wheel's block
            if current is None:
                raise SystemExit(f"gpu wheels: {where}: an indented line outside a wheel block")
            key, _, value = line.strip().partition(" ")
            if key == "requires":
                try:
                    Requirement(value)
                except InvalidRequirement as exc:
                    raise SystemExit(f"gpu wheels: {where}: bad requirement {value!r}: {exc}")
                current.requires.append(value.strip())
            elif key == "never-imported":
                current.never_imported = value.strip() or "(no reason given)"
            else:
                raise SystemExit(f"gpu wheels: {where}: unknown key {key!r}")
            continue
        fields = line.split()
        if fields[0] == "absent":
            if len(fields) < 3:
                raise SystemExit(f"gpu wheels: {where}: `absent NAME REASON` needs a reason")
            absent[canonicalize_name(fields[1])] = " ".join(fields[2:])
            current = None
            continue
        if len(fields) != 5 or "==" not in fields[0] or fields[1] not in ("binary", "sdist"):
            raise SystemExit(f"gpu wheels: {where}: expected `NAME==VERSION binary|sdist FILE "
                             f"SHA256 BYTES`, got {line.strip()!r}")
        name, _, version = fields[0].partition("==")
        key = canonicalize_name(name)
        if key in wheels:
            raise SystemExit(f"gpu wheels: {where}: {key} is listed twice (two versions stop "
                             "the whole install)")
        current = Wheel(key, version, fields[1], fields[2], fields[3], int(fields[4]), line=number)
        wheels[key] = current
    return Lock(wheels, absent)


def parse_image(path: Path = IMAGE) -> tuple[dict[str, str | None], str]:
    """{canonical name: version or None}, and the Python version (`python==X.Y.Z`)."""
    packages: dict[str, str | None] = {}
    python = "3.12"
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if canonicalize_name(name) == "python":
            python = version
            continue
        packages[canonicalize_name(name)] = version.strip() if sep else None
    return packages, python


def marker_environment(python: str) -> dict[str, str]:
    short = ".".join(python.split(".")[:2])
    return {"implementation_name": "cpython", "implementation_version": python,
            "os_name": "posix", "platform_machine": "x86_64",
            "platform_python_implementation": "CPython", "platform_release": "",
            "platform_system": "Linux", "platform_version": "", "python_full_version": python,
            "python_version": short, "sys_platform": "linux", "extra": ""}


def applies(requirement: Requirement, env: dict[str, str], extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": extra})
               for extra in ({""} | extras))


def satisfied(version: str, requirement: Requirement) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def to_dict(self) -> dict:
        return {"ok": not self.errors, "errors": self.errors, "warnings": self.warnings,
                "notes": self.notes}


def zoo_requirements(pyproject: Path = PYPROJECT) -> list[tuple[str, str]]:
    """(requirement, where) for zoo's dependencies and the extras in EXTRAS."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads(pyproject.read_text())["project"]
    found = [(r, "pyproject dependencies") for r in project.get("dependencies", [])]
    for extra in EXTRAS:
        found += [(r, f"pyproject extra [{extra}]")
                  for r in project.get("optional-dependencies", {}).get(extra, [])]
    return found


def requested_extras(lock: Lock, zoo: list[tuple[str, str]]) -> dict[str, set[str]]:
    asked: dict[str, set[str]] = {}
    texts = [r for w in lock.wheels.values() if not w.never_imported for r in w.requires]
    for text in texts + [r for r, _ in zoo]:
        req = Requirement(text)
        if req.extras:
            asked.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return asked


def check_lock(lock: Lock, image: dict[str, str | None], python: str,
               zoo: list[tuple[str, str]], report: Report) -> None:
    env = marker_environment(python)
    asked = requested_extras(lock, zoo)
    needed: set[str] = set()

    def resolve(text: str, by: str) -> None:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        needed.add(key)
        if key in lock.wheels:
            wheel = lock.wheels[key]
            if not satisfied(wheel.version, req):
                report.error(f"{by} needs {text}, the lock carries {key}=={wheel.version}")
        elif key in image:
            have = image[key]
            if have is None:
                if str(req.specifier):
                    report.warn(f"unverified: {by} needs {text}; the image's {key} version is "
                                "not recorded")
            elif not satisfied(have, req):
                report.error(f"{by} needs {text}, the image has {key}=={have}")
            if req.extras:
                report.notes.append(f"{by} asks for {key}[{','.join(sorted(req.extras))}] of "
                                    "the image: its extras are checked by --installed only")
        elif key in lock.absent:
            report.notes.append(f"{by} needs {text}: absent ({lock.absent[key]})")
        else:
            report.error(f"{key} (needed by {by}: {text}) is neither in the image nor in "
                         f"{LOCK.name}")

    for key, wheel in lock.wheels.items():
        if key in image:
            report.error(f"{key} is in the image already ({image[key] or 'version not recorded'}"
                         f"): carry a wheel only for a package the image lacks")
        if wheel.never_imported:
            report.notes.append(f"{key}: requirements not installed ({wheel.never_imported})")
            continue
        for text in wheel.requires:
            req = Requirement(text)
            if not applies(req, env, asked.get(key, set())):
                continue
            resolve(text, f"{key}=={wheel.version}")
        for extra in asked.get(key, set()):
            if not any(Requirement(t).marker and f'"{extra}"' in str(Requirement(t).marker)
                       for t in wheel.requires):
                report.warn(f"{key}[{extra}] is asked for, and the lock records no requirement "
                            "of that extra (right only if it has none)")
    for text, where in zoo:
        req = Requirement(text)
        if applies(req, env, set()):
            resolve(text, f"zoo ({where})")
    for key in lock.wheels:
        if key not in needed:
            report.error(f"{key} is in {LOCK.name} but nothing needs it")
    for key in lock.absent:
        if key in lock.wheels or key in image:
            report.error(f"{key} is declared absent but is carried or in the image")


def tree_bytes(repo: Path = REPO) -> int | None:
    """Bytes of what travels besides .whl: tracked and untracked-not-ignored files."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=repo, capture_output=True,
                                check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = 0
    for name in set(listed.decode(errors="replace").split("\0")):
        path = repo / name
        if name and path.is_file():
            total += path.stat().st_size
    return total


def check_size(lock: Lock, report: Report) -> dict:
    wheels = sum(w.size for w in lock.wheels.values())
    tree = tree_bytes()
    if tree is None:
        if wheels > WHEEL_LIMIT:
            report.error(f"the wheels take {wheels / 2**20:.1f} MiB, over "
                         f"{WHEEL_LIMIT / 2**20:.0f} MiB")
    elif tree + wheels > TREE_LIMIT:
        report.error(f"the tree ({tree / 2**20:.1f} MiB) and the wheels "
                     f"({wheels / 2**20:.1f} MiB) exceed the {TREE_LIMIT / 2**20:.0f} MiB "
                     "that travel to the device machine")
    return {"wheels_bytes": wheels, "tree_bytes": tree}


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist()
                    if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        meta = email.parser.Parser().parsestr(z.read(name).decode("utf-8", "replace"))
    return meta["Name"], meta["Version"], [r.strip() for r in meta.get_all("Requires-Dist") or []]


def recorded_requires(name: str, requires: list[str], asked: set[str]) -> list[str]:
    """The Requires-Dist lines the lock records: no extra, or an extra someone asks for."""
    kept = []
    for text in requires:
        marker = Requirement(text).marker
        if marker is not None and "extra" in str(marker):
            if not any(f'"{extra}"' in str(marker) for extra in asked):
                continue
        kept.append(text)
    return kept


def check_folder(lock: Lock, folder: Path, zoo: list[tuple[str, str]], report: Report) -> None:
    files = {p.name: p for p in folder.glob("*.whl")}
    if not files:
        report.notes.append(f"{folder} holds no wheels: run benchmarks/gpu_wheels.sh "
                            "(not needed for the dry run)")
        return
    asked = requested_extras(lock, zoo)
    wanted = {w.file: w for w in lock.wheels.values()}
    for name in sorted(set(files) - set(wanted)):
        report.error(f"{folder}/{name} is not in {LOCK.name} (a second version of a package "
                     "stops the whole install): delete it")
    for name, wheel in sorted(wanted.items()):
        path = files.get(name)
        if path is None:
            report.error(f"{folder}/{name} is missing: run benchmarks/gpu_wheels.sh")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != wheel.sha256:
            text = f"{name}: sha256 {digest[:12]}... differs from the lock's {wheel.sha256[:12]}..."
            (report.warn if wheel.fetch == "sdist" else report.error)(text)
        meta_name, meta_version, requires = wheel_metadata(path)
        if canonicalize_name(meta_name) != wheel.name or meta_version != wheel.version:
            report.error(f"{name} holds {meta_name} {meta_version}, the lock says "
                         f"{wheel.name}=={wheel.version}")
        recorded = recorded_requires(meta_name, requires, asked.get(wheel.name, set()))
        if sorted(recorded) != sorted(wheel.requires):
            report.error(f"{name}: its Requires-Dist differ from the lock's `requires` lines "
                         f"(run gpu_wheels.sh --update-lock): {sorted(set(recorded) ^ set(wheel.requires))}")


def check_installed(lock: Lock, zoo: list[tuple[str, str]], report: Report) -> dict:
    """On the GPU machine, after the install: the real versions."""
    import importlib.metadata as md

    env = {**marker_environment(".".join(map(str, sys.version_info[:3])))}

    def version_of(key: str) -> str | None:
        try:
            return md.version(key)
        except md.PackageNotFoundError:
            return None

    installed = {}
    for key, wheel in lock.wheels.items():
        have = version_of(key)
        installed[key] = have
        if have != wheel.version:
            report.error(f"{key}: installed {have}, the lock carries {wheel.version}")
    seen: set[tuple[str, str]] = set()

    def check(text: str, by: str) -> None:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        if (key, text) in seen:
            return
        seen.add((key, text))
        have = version_of(key)
        installed.setdefault(key, have)
        if have is None:
            if key in lock.absent:
                report.notes.append(f"{key} absent as declared ({lock.absent[key]})")
            else:
                report.error(f"{key} (needed by {by}: {text}) is not installed")
            return
        if not satisfied(have, req):
            report.error(f"{by} needs {text}, installed {key}=={have}")
        for extra in req.extras:  # the extra's own requirements, from the installed metadata
            for sub in md.requires(key) or []:
                sub_req = Requirement(sub)
                if sub_req.marker is not None and sub_req.marker.evaluate({**env, "extra": extra}) \
                        and not sub_req.marker.evaluate({**env, "extra": ""}):
                    check(sub, f"{key}[{extra}]")

    for key, wheel in lock.wheels.items():
        if wheel.never_imported:
            continue
        for text in wheel.requires:
            req = Requirement(text)
            if applies(req, env, requested_extras(lock, zoo).get(key, set())):
                check(text, f"{key}=={wheel.version}")
    for text, where in zoo:
        if applies(Requirement(text), env, set()):
            check(text, f"zoo ({where})")
    return {k: v for k, v in sorted(installed.items())}


def print_lock(folder: Path, lock: Lock | None, zoo: list[tuple[str, str]]) -> None:
    asked = requested_extras(lock, zoo) if lock else {}
    fetch = {w.file: w.fetch for w in lock.wheels.values()} if lock else {}
    for path in sorted(folder.glob("*.whl")):
        name, version, requires = wheel_metadata(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{canonicalize_name(name)}=={version}  {fetch.get(path.name, 'binary')}  "
              f"{path.name}  {digest}  {path.stat().st_size}")
        for text in recorded_requires(name, requires, asked.get(canonicalize_name(name), set())):
            print(f"    requires {text}")
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--folder", type=Path, help="also check the wheels in this folder")
    parser.add_argument("--installed", action="store_true",
                        help="check the installed versions (run on the GPU machine)")
    parser.add_argument("--print-lock", type=Path, metavar="FOLDER",
                        help="print lock blocks for the wheels in FOLDER and exit")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--verbose", action="store_true", help="print every warning and note")
    args = parser.parse_args(argv)

    zoo = zoo_requirements(args.pyproject)
    if args.print_lock:
        print_lock(args.print_lock, parse_lock(args.lock) if args.lock.exists() else None, zoo)
        return 0
    lock = parse_lock(args.lock)
    image, python = parse_image(args.image)
    report = Report()
    result: dict = {"lock": str(args.lock), "wheels": len(lock.wheels)}
    if args.installed:
        result["mode"] = "installed"
        result["installed"] = check_installed(lock, zoo, report)
    else:
        result["mode"] = "offline"
        check_lock(lock, image, python, zoo, report)
        result.update(check_size(lock, report))
        if args.folder is not None and args.folder.is_dir():
            check_folder(lock, args.folder, zoo, report)
    result.update(report.to_dict())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for text in report.errors:
        print(f"gpu wheels: {text}", file=sys.stderr)
    if args.verbose:
        for text in report.warnings:
            print(f"gpu wheels: warning: {text}")
        for text in report.notes:
            print(f"gpu wheels: note: {text}")
    elif report.warnings:
        print(f"gpu wheels: {len(report.warnings)} warning(s), e.g. {report.warnings[0]} "
              "(--verbose lists them)")
    mib = sum(w.size for w in lock.wheels.values()) / 2**20
    if report.errors:
        print(f"gpu wheels: {len(report.errors)} error(s) in {args.lock.name} "
              f"({result['mode']} check); first: {report.errors[0]}", file=sys.stderr)
        return 1
    print(f"gpu wheels: ok ({result['mode']}): {len(lock.wheels)} wheels, {mib:.1f} MiB, "
          f"{len(report.warnings)} unverified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
