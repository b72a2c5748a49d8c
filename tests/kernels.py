"""Real Linux kernel trees from Debian's linux-source packages, fetched and built at test time.

Tests that check kaudit against the real KVM code need a kernel tree, which is far too big to commit. This module
downloads `linux-source-<version>` with apt (Debian's package registry is the only network it uses), unpacks it
into CACHE and, for tests that need real compiler flags, configures a copy with KVM enabled and builds the KVM
objects so that the kernel's own gen_compile_commands.py can write compile_commands.json.

Every tree is made in a temporary sibling directory and renamed into place only when complete; the marker file
READY inside it says so. A second call returns at once, and a half-finished run (killed, failed) is thrown away
and redone. Wall times of each step go to CACHE/timings-<version>.json for reporting.

CACHE is $KAUDIT_KERNEL_CACHE, else $XDG_CACHE_HOME/kaudit-kernels (~/.cache/kaudit-kernels when XDG_CACHE_HOME is
unset). What the host lacks (apt, the network, build packages when not root) raises Unavailable, which the tests turn
into a skip naming it; installing build packages never upgrades an installed package.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("KAUDIT_KERNEL_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kaudit-kernels")
VERSIONS = ("6.12", "6.1")
READY = ".kaudit-ready"

# What an analysis of KVM reads; the rest of the 1.7 GB tree only costs disk and time.
_SOURCE_DIRS = ("arch/x86/", "include/", "virt/", "scripts/", "tools/include/")
# KVM options the configured tree must have, checked in .config when the version's Kconfig defines them
# (KVM_SMM and KVM_HYPERV are 6.2+ and 6.8+).
_KVM_OPTIONS = ("VIRTUALIZATION", "KVM", "KVM_INTEL", "KVM_AMD", "KVM_AMD_SEV", "KVM_SMM", "KVM_HYPERV", "KVM_XEN")
# What KVM_AMD_SEV depends on (CRYPTO_DEV_SP_PSP) and what that depends on; defconfig leaves them off.
_KVM_NEEDS = ("CRYPTO_HW", "CRYPTO_DEV_CCP", "CRYPTO_DEV_CCP_DD", "CRYPTO_DEV_SP_PSP", "AMD_IOMMU")
# Compile commands the tests rely on; in both versions virt/kvm is compiled from arch/x86/kvm/Makefile.
_KEY_SOURCES = ("arch/x86/kvm/x86.c", "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/vmx/vmx.c", "virt/kvm/kvm_main.c")
_JOBS = f"-j{os.cpu_count() or 2}"
_MAKE = ("make", "ARCH=x86_64")


class Unavailable(RuntimeError):
    """The host cannot provide a tree (no apt, no network, build packages missing and not root): skip, saying why."""


def source_tree(version: str) -> Path:
    """An unpacked, pristine source tree of Debian's linux-source-<version> (no build products).

    Only the directories an analysis of KVM reads are extracted (see _SOURCE_DIRS), plus top-level files.
    """
    _check_version(version)
    dest = CACHE / f"src-{version}"
    if (dest / READY).is_file():
        return dest
    with _locked(f"src-{version}"), _Timings(version, "source_tree") as timings:
        if (dest / READY).is_file():
            return dest
        deb = _deb(version, timings)
        with _workdir(f"src-{version}") as work:
            tarball = _unpack_deb(deb, work / "deb", timings)
            tree = work / "tree"
            with timings.step("extract_subset"):
                _extract_subset(tarball, tree)
            shutil.rmtree(work / "deb")
            _publish(tree, dest, {"version": version, "deb": deb.name})
        return dest


def configured_tree(version: str) -> tuple[Path, Path]:
    """(tree, compile_commands.json) of a full copy configured with KVM and with the KVM objects built.

    Real compile commands give the exact defines and include paths the kernel uses, which a pristine tree cannot.
    The tree is x86_64 defconfig plus KVM (Intel, AMD with SEV, SMM, Hyper-V, Xen), `make prepare`, and
    `make arch/x86/kvm/`, which also compiles the virt/kvm files linked into kvm.
    """
    _check_version(version)
    dest = CACHE / f"build-{version}"
    commands = dest / "compile_commands.json"
    if (dest / READY).is_file():
        return dest, commands
    with _locked(f"build-{version}"), _Timings(version, "configured_tree") as timings:
        if (dest / READY).is_file():
            return dest, commands
        deb = _deb(version, timings)
        _ensure_build_deps(timings)
        with _workdir(f"build-{version}") as work:
            tarball = _unpack_deb(deb, work / "deb", timings)
            tree = work / "tree"
            tree.mkdir()
            with timings.step("extract_full"):
                _run(["tar", "-xJf", str(tarball), "-C", str(tree), "--strip-components=1"])
            shutil.rmtree(work / "deb")
            env = _make_env()
            with timings.step("defconfig"):
                _run([*_MAKE, "defconfig"], cwd=tree, env=env)
            with timings.step("enable_kvm"):
                enable = [arg for name in (*_KVM_OPTIONS, *_KVM_NEEDS) for arg in ("--enable", name)]
                _run(["bash", "scripts/config", "--file", ".config", *enable], cwd=tree, env=env)
                _run([*_MAKE, "olddefconfig"], cwd=tree, env=env)
                timings.info["config"] = _check_config(tree)
            with timings.step("prepare"):
                _run([*_MAKE, _JOBS, "prepare"], cwd=tree, env=env)
            with timings.step("build_kvm"):
                _run([*_MAKE, _JOBS, "arch/x86/kvm/"], cwd=tree, env=env)
                timings.info["objects"] = _check_objects(tree)
            with timings.step("compile_commands"):
                timings.info["compile_commands"] = _compile_commands(tree, dest)
            _publish(tree, dest, {"version": version, "deb": deb.name, **timings.info})
    return dest, commands


def _check_version(version: str) -> None:
    if not re.fullmatch(r"\d+\.\d+", version):
        raise ValueError(f"kernel version must look like 6.12, not {version!r}")


class _Timings:
    """Wall time per step, merged into CACHE/timings-<version>.json under the function's name when work was done."""

    def __init__(self, version: str, kind: str) -> None:
        self.path = CACHE / f"timings-{version}.json"
        self.kind = kind
        self.steps: dict[str, float] = {}
        self.info: dict[str, object] = {}
        self.start = time.monotonic()

    def __enter__(self) -> _Timings:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.steps:  # another process finished the tree while we waited for the lock
            return
        self.steps["total"] = round(time.monotonic() - self.start, 1)
        with _locked(self.path.stem):  # source_tree and configured_tree of one version share the file
            record = json.loads(self.path.read_text()) if self.path.is_file() else {}
            record[self.kind] = {
                "ok": exc_type is None,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": self.steps,
                **self.info,
            }
            self.path.write_text(json.dumps(record, indent=2) + "\n")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - start, 1)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise concurrent test processes (pytest-xdist, parallel CI jobs) that want the same tree."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _workdir(name: str) -> Iterator[Path]:
    """A fresh temporary sibling of the final tree (same filesystem, so rename works); stale ones are removed."""
    for stale in CACHE.glob(f".tmp-{name}-*"):  # we hold the lock, so nobody else is using these
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=CACHE))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(tree: Path, dest: Path, info: dict[str, object]) -> None:
    """Mark the finished tree and rename it into place, replacing an unmarked leftover."""
    (tree / READY).write_text(json.dumps(info, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tree.rename(dest)


def _run(cmd: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise RuntimeError with its tail of stderr (or stdout when stderr is empty)."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-40:])
        raise RuntimeError(f"command failed (exit {proc.returncode}) in {cwd or os.getcwd()}: {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _deb(version: str, timings: _Timings) -> Path:
    """The linux-source-<version> .deb in CACHE, fetched with `apt-get download` if not there yet."""
    package = f"linux-source-{version}"
    with _locked(f"deb-{version}"):
        found = sorted(CACHE.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
        for tool in ("apt-get", "dpkg"):
            if not shutil.which(tool):
                raise Unavailable(f"the real-kernel tests fetch Debian's {package} and need {tool} (a Debian host)")
        with timings.step("download"), _workdir(f"deb-{version}") as work:
            work.chmod(0o755)  # let apt's sandbox user write here, or apt warns and downloads as root
            try:
                _run(["apt-get", "download", "-q", package], cwd=work)
            except RuntimeError as err:  # package lists missing or stale: the candidate is gone from the mirror
                if os.geteuid() != 0:
                    raise Unavailable(f"apt-get download {package} failed (stale package lists need "
                                      f"`apt-get update` as root?): {err}") from err
                _run(["apt-get", "update", "-qq"])
                try:
                    _run(["apt-get", "download", "-q", package], cwd=work)
                except RuntimeError as again:
                    raise Unavailable(f"apt-get download {package} failed: {again}") from again
            debs = list(work.glob(f"{package}_*.deb"))
            if len(debs) != 1:
                raise RuntimeError(f"apt-get download {package} left {[d.name for d in debs]} in {work}")
            return debs[0].rename(CACHE / debs[0].name)


def _unpack_deb(deb: Path, into: Path, timings: _Timings) -> Path:
    """`dpkg -x` the package and return its /usr/src/linux-source-<version>.tar.xz."""
    with timings.step("dpkg_x"):
        _run(["dpkg", "-x", str(deb), str(into)])
    tarballs = list((into / "usr" / "src").glob("linux-source-*.tar.xz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"{deb.name}: expected one usr/src/linux-source-*.tar.xz, found {tarballs}")
    return tarballs[0]


def _extract_subset(tarball: Path, tree: Path) -> None:
    """Extract top-level files and _SOURCE_DIRS in one streaming pass, dropping the linux-source-<v>/ prefix.

    Done in Python because GNU tar fails on a requested member that a version lacks.
    """
    tree.mkdir()
    with tarfile.open(tarball, "r|xz") as tar:
        for member in tar:
            _, _, name = member.name.partition("/")
            top_file = "/" not in name and not member.isdir()
            if name and (top_file or name == "arch/Kconfig" or f"{name}/".startswith(_SOURCE_DIRS)):
                member.name = name
                tar.extract(member, tree, filter="tar")
    if not (tree / "arch/x86/kvm").is_dir():
        raise RuntimeError(f"{tarball.name}: no arch/x86/kvm in the extracted tree {tree}")


def _missing_build_deps() -> list[str]:
    """The Debian packages `make prepare` and objtool need (flex, bison, bc, libelf and openssl headers, a C
    toolchain) that this host lacks."""
    have = {
        "flex": shutil.which("flex"),
        "bison": shutil.which("bison"),
        "bc": shutil.which("bc"),
        "libelf-dev": Path("/usr/include/libelf.h").exists() or Path("/usr/include/gelf.h").exists(),
        "libssl-dev": Path("/usr/include/openssl/ssl.h").exists(),
        "gcc": shutil.which("gcc"),
        "make": shutil.which("make"),
        "libc6-dev": Path("/usr/include/stdio.h").exists(),
    }
    return [name for name, ok in have.items() if not ok]


def _ensure_build_deps(timings: _Timings) -> None:
    """Install the missing build packages as root, never upgrading an installed package (not even as a
    dependency: the install is simulated first); without root, say what is missing."""
    packages = _missing_build_deps()
    if not packages:
        return
    install = f"apt-get install --no-upgrade {' '.join(packages)}"
    if os.geteuid() != 0:
        raise Unavailable(f"the real-kernel tests build the KVM objects and need: {install} (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with timings.step("install_build_deps"):
        try:
            plan = _run(["apt-get", "install", "-s", "--no-upgrade", *packages], env=env)
        except RuntimeError:
            _run(["apt-get", "update", "-qq"], env=env)
            plan = _run(["apt-get", "install", "-s", "--no-upgrade", *packages], env=env)
        upgrades = re.findall(r"^Inst (\S+) \[", plan, re.MULTILINE)
        if upgrades:
            raise Unavailable(f"`{install}` would upgrade installed packages ({', '.join(upgrades)}); "
                              "not done: install the build packages yourself")
        _run(["apt-get", "install", "-y", "-qq", "--no-upgrade", *packages], env=env)


def _make_env() -> dict[str, str]:
    """The environment without variables that would redirect or cross-compile the kernel build."""
    drop = {"ARCH", "CROSS_COMPILE", "O", "KBUILD_OUTPUT", "LLVM", "CC", "KCONFIG_CONFIG", "MAKEFLAGS", "MFLAGS"}
    return {key: value for key, value in os.environ.items() if key not in drop} | {"LC_ALL": "C"}


def _check_config(tree: Path) -> dict[str, str]:
    """Each of _KVM_OPTIONS that this version's Kconfig defines must be y or m after olddefconfig."""
    kconfig = (tree / "arch/x86/kvm/Kconfig").read_text()
    config = dict(re.findall(r"^CONFIG_(\w+)=(\S+)$", (tree / ".config").read_text(), re.MULTILINE))
    result: dict[str, str] = {}
    for name in _KVM_OPTIONS:
        if not re.search(rf"^(menu)?config {name}$", kconfig, re.MULTILINE):
            result[name] = "not in this version"
        else:
            result[name] = config.get(name, "n")
    wrong = {name: value for name, value in result.items() if value not in ("y", "m", "not in this version")}
    if wrong:
        raise RuntimeError(f"{tree}/.config after olddefconfig: KVM options not enabled: {wrong}")
    return result


def _check_objects(tree: Path) -> dict[str, int]:
    """The KVM build must have produced objects for the common, SVM and VMX code and for virt/kvm."""
    counts = {
        d: len(list((tree / d).glob("*.o")))
        for d in ("arch/x86/kvm", "arch/x86/kvm/svm", "arch/x86/kvm/vmx", "virt/kvm")
    }
    if not all(counts.values()):
        raise RuntimeError(f"{tree}: `make arch/x86/kvm/` left no objects in {[d for d, n in counts.items() if not n]}")
    return counts


def _compile_commands(tree: Path, dest: Path) -> dict[str, int]:
    """Run the kernel's gen_compile_commands.py, point its absolute paths at dest, and check the KVM entries."""
    out = tree / "compile_commands.json"
    _run(["python3", "scripts/clang-tools/gen_compile_commands.py", "-d", str(tree), "-o", str(out)], cwd=tree)
    # The script writes absolute paths (realpath in 6.12) of the temporary tree; the tree is renamed next.
    text = out.read_text()
    for old, new in ((tree.resolve(), dest.resolve()), (tree.absolute(), dest.absolute())):
        text = text.replace(f'"{old}/', f'"{new}/').replace(f'"{old}"', f'"{new}"')
    out.write_text(text)
    files = {os.path.relpath(entry["file"], entry["directory"]) for entry in json.loads(text)}
    missing = [source for source in _KEY_SOURCES if source not in files]
    if missing:
        raise RuntimeError(f"{out}: no compile command for {missing}")
    return {
        "entries": len(files),
        "arch/x86/kvm": sum(f.startswith("arch/x86/kvm/") for f in files),
        "virt/kvm": sum(f.startswith("virt/kvm/") for f in files),
    }
