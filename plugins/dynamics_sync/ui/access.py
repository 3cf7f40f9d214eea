"""Who may see the Sync page: Airflow's own authentication, and read access to the sync's DAGs.

A plugin's FastAPI app is served without authentication unless it asks for it, so every route but the
static files depends on Airflow's `get_user` (the `_token` cookie the UI sets at login, or a Bearer
token from POST /auth/token) and then on the auth manager: the activity log is what the sync's tasks
wrote about people, so a user sees the rows of the sync DAGs whose task logs they may read, and is
refused (403) when that is none of them. Whatever the auth manager is (Simple, FAB, Keycloak...), its
own rules decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.models.dag import DagModel, DagTag
from airflow.utils.session import create_session
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select

# The DAGs whose rows the activity log holds (dags/); DAGs tagged dynamics-sync are added when parsed.
SYNC_DAG_IDS = ("dynamics_initial_sync", "dynamics_incremental_sync", "dynamics_replay", "sync_person_to_dynamics")
SYNC_TAG = "dynamics-sync"


def sync_dag_ids() -> list[str]:
    """The known sync DAGs plus any DAG carrying the product's tag (a deployment may add its own)."""
    with create_session() as session:
        tagged = session.scalars(select(DagTag.dag_id).where(DagTag.name == SYNC_TAG)).all()
    return list(dict.fromkeys([*SYNC_DAG_IDS, *sorted(tagged)]))


def readable_dag_ids(user: Any, dag_ids: Sequence[str]) -> list[str]:
    """Of `dag_ids`, those whose task logs the auth manager lets `user` read."""
    manager = get_auth_manager()
    teams = DagModel.get_dag_id_to_team_name_mapping(list(dag_ids))
    return [dag_id for dag_id in dag_ids
            if manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.TASK_LOGS,
                                         details=DagDetails(id=dag_id, team_name=teams.get(dag_id)), user=user)]


class Reader:
    """An authenticated user allowed to read the activity rows of `dag_ids` (never empty)."""

    def __init__(self, user: Any, dag_ids: list[str]):
        self.user, self.dag_ids = user, dag_ids

    @property
    def name(self) -> str:
        return str(self.user.get_name())


class NotAReader(HTTPException):
    """A valid login without read access to the sync's DAGs (unlike get_user's 403 for a broken token)."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_403_FORBIDDEN,
                         "You may not read the task logs of any Dynamics Sync DAG, so not its activity log")


def require_reader(user: GetUserDep) -> Reader:
    """The route dependency: 401/403 without a valid login (get_user), NotAReader without read access."""
    dag_ids = readable_dag_ids(user, sync_dag_ids())
    if not dag_ids:
        raise NotAReader()
    return Reader(user, dag_ids)


ReaderDep = Annotated[Reader, Depends(require_reader)]


def login_url(request: Request) -> str:
    """Where the auth manager logs people in, coming back to the page they asked for."""
    return get_auth_manager().get_url_login(next_url=str(request.url))
