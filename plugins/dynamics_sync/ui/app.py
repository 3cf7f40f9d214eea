"""The Sync page's FastAPI app, mounted by the Airflow api-server under /dynamics-sync (plugins/dynamics_sync_ui.py).

Routes (all but /static behind Airflow's login and the sync DAGs' read access, see access.py):

- `/`            the page: entities, API budget, activity log search, Data Docs (server-rendered, escaped)
- `/activity`    the activity log table alone, what the page's search swaps in as you type (GET or POST)
- `/api/overview`, `/api/activity`   the same data as JSON, for scripts and checks (activity: GET or POST)
- `/data-docs/{suite}/{path}`        the Great Expectations Data Docs of each suite's last run

A page request without a valid login (none, expired, broken) is sent to the auth manager's login (302,
back to the page afterwards); an API request gets Airflow's own 401/403; a logged-in user without read
access to the sync's DAGs gets 403 (a page saying so, or JSON).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urljoin

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from dynamics_sync.state import STATE_CONN_ID, StateStore, sqlalchemy_url
from dynamics_sync.ui import access, budget, datadocs, readmodel
from dynamics_sync.ui.access import ReaderDep

HERE = Path(__file__).resolve().parent
PAGE_ROUTES_PREFIXES = ("/api/",)  # everything else is a page a browser shows: an anonymous one logs in first
_stores: dict[str, StateStore] = {}
_budget = budget.BudgetCache()
_types: dict[str, tuple[float, list[str]]] = {}  # per store URL: (read at, the activity types offered)
TYPES_CACHE_S = 300.0  # a distinct over the whole log; new types are rare


def activity_types(store: StateStore) -> list[str]:
    key = str(store.engine.url)
    read_at, types = _types.get(key, (0.0, []))
    if not types or time.monotonic() - read_at > TYPES_CACHE_S:
        types = readmodel.activity_types(store)
        _types[key] = (time.monotonic(), types)
    return types


def state_store() -> StateStore:
    """The state store the DAGs write (connection dynamics_sync_state), one engine per database and process."""
    from airflow.sdk import BaseHook

    url = sqlalchemy_url(BaseHook.get_connection(STATE_CONN_ID))
    if url not in _stores:
        _stores[url] = StateStore.from_url(url)
    return _stores[url]


def _entities() -> list[str]:
    from dynamics_sync.entities import entity_names

    return entity_names()


# ---- rendering -----------------------------------------------------------------------------------------

def _age(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ui_path(dag_id: str, run_id: str | None = None, task_id: str | None = None) -> str:
    """The Airflow UI's route for a DAG, its run or a task instance (relative to the UI's base)."""
    path = f"dags/{quote(dag_id, safe='')}"
    if run_id:
        path += f"/runs/{quote(run_id, safe='')}"
        if task_id:
            path += f"/tasks/{quote(task_id, safe='')}"
    return path


TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters.update(age=_age, when=_when, urlencode_params=urlencode)
TEMPLATES.globals.update(ui_path=_ui_path, quote=quote)


def render(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(**context)


def render_page(*, statuses: list[readmodel.EntityStatus], marketo: budget.MarketoBudget,
                page: readmodel.ActivityPage, runs: list[tuple[str, str]], sites: list[datadocs.Site],
                entities: list[str], user: str, now: dt.datetime,
                activity_types: list[str] | tuple[str, ...] = readmodel.ACTIVITY_TYPES) -> str:
    """The whole page; a pure function of what was read, so it is tested without a server."""
    suites = {site.suite for site in sites}
    return render("page.html", statuses=statuses, marketo=marketo, dynamics_limits=budget.DYNAMICS_LIMITS,
                  marketo_rate=budget.MARKETO_RATE, marketo_reset=budget.MARKETO_RESET,
                  cache_s=_budget.ttl_s, page=page, runs=runs, sites=sites, suites=suites, entities=entities,
                  activity_types=activity_types, user=user, now=now)


# ---- the app -------------------------------------------------------------------------------------------

async def _query(request: Request) -> readmodel.ActivityQuery:
    """The search, from the query string or, for a POST, the form body as well.

    The page's own search posts it: Airflow's HTTP access log records every query string, and an email
    typed into the search box is people's data that has no business in a log; a GET with ?q= works too
    (links, scripts) and is logged like any URL.
    """
    fields: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        fields.update({k: str(v) for k, v in (await request.form()).items()})
    try:
        limit, offset = int(fields.get("limit") or readmodel.DEFAULT_LIMIT), int(fields.get("offset") or 0)
    except ValueError:
        raise HTTPException(422, "limit and offset must be whole numbers") from None
    if not 1 <= limit <= readmodel.MAX_LIMIT or offset < 0:
        raise HTTPException(422, f"limit must be 1..{readmodel.MAX_LIMIT} and offset 0 or more")
    return readmodel.ActivityQuery(q=fields.get("q", ""), activity_type=fields.get("type", ""),
                                   run_id=fields.get("run_id", ""), entity=fields.get("entity", ""),
                                   open_only=fields.get("open", "") not in ("", "0", "false"), limit=limit,
                                   offset=offset)


QueryDep = Annotated[readmodel.ActivityQuery, Depends(_query)]


def create_app() -> FastAPI:
    app = FastAPI(title="Dynamics Sync", description=__doc__, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def login_first(request: Request, exc: StarletteHTTPException) -> Response:
        """A browser without a valid login is sent to log in; an API client gets the plain status."""
        relative = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if not relative.startswith(PAGE_ROUTES_PREFIXES):
            if isinstance(exc, access.NotAReader):
                return HTMLResponse(render("refused.html", detail=str(exc.detail)), status_code=403)
            if exc.status_code in (401, 403):  # no token, or an expired or broken one: log in (again)
                return RedirectResponse(access.login_url(request), status_code=302)
        return await http_exception_handler(request, exc)

    @app.get("/", response_class=HTMLResponse)
    def page(reader: ReaderDep, query: QueryDep) -> HTMLResponse:
        store, now = state_store(), dt.datetime.now(dt.UTC)
        entities = _entities()
        html = render_page(statuses=readmodel.entity_statuses(store, entities, now), marketo=_budget.get(),
                           page=readmodel.search_activity(store, query, reader.dag_ids),
                           runs=readmodel.recent_runs(store, reader.dag_ids), sites=datadocs.sites(),
                           entities=entities, user=reader.name, now=now, activity_types=activity_types(store))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.api_route("/activity", methods=["GET", "POST"], response_class=HTMLResponse)
    def activity_fragment(reader: ReaderDep, query: QueryDep) -> HTMLResponse:
        page = readmodel.search_activity(state_store(), query, reader.dag_ids)
        return HTMLResponse(render("activity.html", page=page), headers={"Cache-Control": "no-store"})

    @app.get("/api/overview")
    def overview(reader: ReaderDep, request: Request) -> JSONResponse:
        now = dt.datetime.now(dt.UTC)
        statuses = readmodel.entity_statuses(state_store(), _entities(), now)
        sites = datadocs.sites()
        base = _ui_base(request)
        body = {
            "generated_at": now.isoformat(),
            "entities": [{**s.as_json(now),
                          "last_run_url": urljoin(base, _ui_path(*s.last_run)) if s.last_run else None,
                          "data_docs": [_docs_url(request, site.suite) for site in sites if site.entity == s.entity]}
                         for s in statuses],
            "budget": {"marketo": _budget.get().as_json(),
                       "dynamics": {"daily_quota": None, "limits": dict(budget.DYNAMICS_LIMITS)}},
            "data_docs": [{"suite": site.suite, "built_at": site.built_at.isoformat(),
                           "url": _docs_url(request, site.suite)}
                          for site in sites],
        }
        return JSONResponse(jsonable_encoder(body), headers={"Cache-Control": "no-store"})

    @app.api_route("/api/activity", methods=["GET", "POST"])
    def activity(reader: ReaderDep, query: QueryDep, request: Request) -> JSONResponse:
        page = readmodel.search_activity(state_store(), query, reader.dag_ids)
        base = _ui_base(request)
        rows = [{**row, "task_instance_url": urljoin(base, _ui_path(row["dag_id"], row["run_id"], row["task_id"]))
                 if row["task_id"] else None} for row in page.rows]
        body = {"rows": rows, "limit": query.limit, "offset": query.offset, "has_more": page.has_more}
        return JSONResponse(jsonable_encoder(body), headers={"Cache-Control": "no-store"})

    @app.get("/data-docs/{suite}/{path:path}")
    def data_docs(reader: ReaderDep, suite: str, path: str) -> FileResponse:
        found = datadocs.site_file(suite, path)
        if found is None:
            raise HTTPException(404, "no such Data Docs page")
        return FileResponse(found, headers={"Cache-Control": "no-store"})

    return app


def _page_base(request: Request) -> str:
    """This app's own base URL (root_path is where the api-server mounted it, behind any proxy prefix)."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}/"


def _ui_base(request: Request) -> str:
    """The Airflow UI's base URL: the parent of this app's mount point (so a base_url subpath is kept)."""
    return urljoin(_page_base(request), "../")


def _docs_url(request: Request, suite: str) -> str:
    return f"{_page_base(request)}data-docs/{quote(suite, safe='')}/index.html"
