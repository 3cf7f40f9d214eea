"""The Great Expectations Data Docs the validate steps build, found and served from the plugin's own app.

validate.run_suite rebuilds one GX site per suite (`<entity>_to_<side>`) under data_docs_root(), showing
the suite's last run. The sites hold sample failing values, i.e. people's data, so they are served only
through the plugin's authenticated routes, never as an open static mount, and only files inside a site.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

SITE = Path("gx") / "uncommitted" / "data_docs" / "local_site"
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def root() -> Path:
    """Where the validate steps write (DYNAMICS_SYNC_DATA_DOCS, else the checkout's .local/data_docs)."""
    configured = os.environ.get("DYNAMICS_SYNC_DATA_DOCS")
    if configured:
        return Path(configured)
    from dynamics_sync.validate import data_docs_root

    return data_docs_root()


@dataclass(frozen=True)
class Site:
    suite: str
    built_at: dt.datetime

    @property
    def entity(self) -> str:
        return self.suite.rsplit("_to_", 1)[0]

    @property
    def side(self) -> str:
        return self.suite.rsplit("_to_", 1)[-1]


def sites(base: Path | None = None) -> list[Site]:
    """Every suite with a built site, by name; built_at is when its index was last written."""
    base = base or root()
    found = []
    if base.is_dir():
        for child in sorted(base.iterdir()):
            index = child / SITE / "index.html"
            if SUITE_NAME.match(child.name) and index.is_file():
                found.append(Site(child.name, dt.datetime.fromtimestamp(index.stat().st_mtime, dt.UTC)))
    return found


def site_file(suite: str, path: str, base: Path | None = None) -> Path | None:
    """The file of `suite`'s site at `path`, or None when there is none or the path leaves the site."""
    if not SUITE_NAME.match(suite):
        return None
    site = ((base or root()) / suite / SITE).resolve()
    target = (site / (path or "index.html")).resolve()
    if not target.is_relative_to(site):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None
