"""Where a page's links point: server routes, or the static report's files (relative, readable from file://)."""

from __future__ import annotations


class Links:
    """The server's routes."""

    live = True

    def facesets(self) -> str:
        return "/facesets"

    def faceset(self, name: str) -> str:
        return f"/faceset/{name}"

    def pool(self) -> str:
        return "/pool"

    def decisions(self, before: int | None = None) -> str:
        return "/decisions" if before is None else f"/decisions?before={before}"

    def candidates(self) -> str:
        return "/candidates"

    def thumb(self, sha256: str) -> str:
        return f"/thumb/{sha256}.webp"

    def photo(self, sha256: str) -> str:
        return f"/photo/{sha256}"

    def static(self, name: str) -> str:
        return f"/static/{name}"


class FileLinks(Links):
    """The static report's files, all in one folder; notes every thumbnail a page shows, to copy beside it."""

    live = False

    def __init__(self) -> None:
        self.thumbs: set[str] = set()

    def facesets(self) -> str:
        return "index.html"

    def faceset(self, name: str) -> str:
        return f"{name}.html"

    def pool(self) -> str:
        return "pool.html"

    def decisions(self, before: int | None = None) -> str:
        return "decisions.html" if before is None else f"decisions-{before}.html"

    def candidates(self) -> str:
        return "candidates.html"

    def thumb(self, sha256: str) -> str:
        self.thumbs.add(sha256)
        return f"thumbs/{sha256}.webp"

    def photo(self, sha256: str) -> str:
        return ""  # the report shows where the photo is, it does not copy photos

    def static(self, name: str) -> str:
        return f"static/{name}"
