"""Checked downloads and safe archive extraction.

* :func:`download_file` streams into :func:`aalib.io.atomic_write`'s temporary file beside the
  destination and verifies the md5 before the file is moved into place, so an interrupted or
  corrupted download never looks like a finished one.
* :func:`safe_extract` refuses archive members that would land outside the target folder:
  absolute paths, ``..`` components, links pointing outside, members written through a link,
  and device files ("zip slip", CVE-2007-4559). On Python versions that have it, tar extraction
  also runs under ``tarfile``'s ``"data"`` filter (PEP 706) as a second line of defence.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import stat
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from ..io import atomic_write

__all__ = ["ChecksumError", "download_file", "file_md5", "safe_extract"]

_CHUNK = 1 << 20
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class ChecksumError(ValueError):
    """A file's md5 differs from the published one."""


def file_md5(path: str | Path, chunk_size: int = _CHUNK) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | Path, md5: str, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and check its md5 before the file appears under its name.

    An existing ``dest`` with the right md5 is kept without downloading. On a checksum mismatch
    the temporary file is deleted and :class:`ChecksumError` names the URL and both sums.
    Any ``urllib`` URL works, ``file://`` included (the tests use it; no network needed).
    """
    dest = Path(dest)
    if dest.is_file() and file_md5(dest) == md5:
        return dest

    def fetch(out: IO[bytes]) -> None:  # raising here leaves no file behind (atomic_write)
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "aalib"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            with tqdm(total=int(length) if length else None, unit="B", unit_scale=True,
                      desc=f"download {dest.name}", disable=not progress) as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        got = digest.hexdigest()
        if got != md5:
            raise ChecksumError(f"md5 of {url} is {got}, expected {md5}: download corrupted or file changed")

    atomic_write(dest, fetch, binary=True)
    return dest


def _check_path(kind: str, member: str, path: str) -> str:
    """Normalised relative POSIX path of ``path``, or ValueError if it could leave the target."""
    unified = path.replace("\\", "/")
    if unified.startswith("/") or _WINDOWS_DRIVE.match(unified):
        raise ValueError(f"refusing {kind} member '{member}': absolute path '{path}'")
    if ".." in unified.split("/"):
        raise ValueError(f"refusing {kind} member '{member}': '..' component in '{path}'")
    return posixpath.normpath(unified)


def _check_link(kind: str, member: str, link: str, relative_to_member: bool) -> None:
    """A link target must resolve (lexically) inside the target folder."""
    unified = link.replace("\\", "/")
    if unified.startswith("/") or _WINDOWS_DRIVE.match(unified):
        raise ValueError(f"refusing {kind} member '{member}': link to absolute path '{link}'")
    base = posixpath.dirname(member.replace("\\", "/")) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, unified))
    if resolved == ".." or resolved.startswith("../"):
        raise ValueError(f"refusing {kind} member '{member}': link '{link}' points outside the target folder")


def _through_link(path: str, links: set[str]) -> str | None:
    """The first parent folder of ``path`` that is a link member, if any."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        parent = "/".join(parts[:end])
        if parent in links:
            return parent
    return None


def _check_tar(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = archive.getmembers()
    links: set[str] = set()
    for member in members:
        path = _check_path("tar", member.name, member.name)
        parent_link = _through_link(path, links)
        if parent_link is not None:
            raise ValueError(f"refusing tar member '{member.name}': written through link member '{parent_link}'")
        if member.issym():
            _check_link("tar", member.name, member.linkname, relative_to_member=True)
            links.add(path)
        elif member.islnk():  # hard link targets are archive paths
            _check_path("tar", member.name, member.linkname)
            _check_link("tar", member.name, member.linkname, relative_to_member=False)
            links.add(path)
        elif not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing tar member '{member.name}': not a regular file, folder or link")
    return members


def _check_zip(archive: zipfile.ZipFile) -> None:
    for info in archive.infolist():
        _check_path("zip", info.filename, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode in the high 16 bits
            # zipfile writes a link as a plain file holding its target, but an archive that
            # contains an escaping link is hostile or broken either way.
            _check_link("zip", info.filename, archive.read(info).decode("utf-8", "replace"), relative_to_member=True)


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` archive into ``target`` after checking every member.

    The whole member list is checked before anything is written, so a hostile archive leaves no
    partial extraction. Raises ValueError naming the offending member, or when ``archive`` is
    neither a zip nor a tar file.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            _check_zip(handle)
            handle.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            members = _check_tar(handle)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12 (PEP 706)
                try:
                    handle.extractall(target, members=members, filter="data")
                except tarfile.FilterError as error:
                    raise ValueError(f"refusing tar member: {error}") from error
            else:
                handle.extractall(target, members=members)
    else:
        raise ValueError(f"'{archive}' is neither a zip nor a tar archive (allowed: .zip, .tar, .tar.gz, .tgz)")
    return target
