"""The read models: their status, and rebuilding one while the current one serves."""

import logging
import threading
from contextlib import closing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from projections.readmodels.operate import ReadModels
from projections.readmodels.rebuild import rebuild
from projections.readmodels.store import MODELS, LockBusy
from service import schemas
from service.auth import ServiceDep, scope
from service.errors import error_responses, problem
from service.keys import ApiKey
from service.state import Service

log = logging.getLogger("journey.service")

router = APIRouter(tags=["projections"])
Admin = Annotated[ApiKey, Depends(scope("projections:admin"))]


@router.get(
    "/v1/projections",
    response_model=schemas.ProjectionsStatus,
    responses=error_responses(),
)
def projections_status(_key: Admin, service: ServiceDep) -> Any:
    """Each read model's generation, position, the log head, lag and staleness, any
    generation being built, and the rebuilds this process started."""
    return JSONResponse(
        {"read_models": service.models.status(), "rebuilds": service.rebuild_states()}
    )


@router.post(
    "/v1/projections/{name}/rebuild",
    status_code=202,
    response_model=schemas.RebuildAnswer,
    responses={
        200: {"model": schemas.RebuildAnswer, "description": "Rebuilt (`wait=true`)."},
        **error_responses(404, 409, 422, 500),
    },
)
def rebuild_projection(
    name: Annotated[str, Path(description=f"One of {', '.join(MODELS)}.")],
    _key: Admin,
    service: ServiceDep,
    wait: Annotated[
        bool, Query(description="Answer when done (200) instead of at once (202).")
    ] = False,
) -> Any:
    """Build a new generation from the whole log while the current one serves, then
    switch atomically. Progress shows in `GET /v1/projections`."""
    if name not in MODELS:
        reason = f"no read model {name!r}; expected {', '.join(MODELS)}"
        raise problem(404, "name", reason, "not_found")
    state = service.claim_rebuild(name)
    if state is None:
        raise problem(409, "name", f"{name} is already being rebuilt", "busy")
    if not wait:
        threading.Thread(
            target=run_rebuild, args=(service, name, state), name=f"rebuild-{name}", daemon=True
        ).start()
        return JSONResponse({"name": name, "state": "started"}, 202)
    failure = run_rebuild(service, name, state)
    if state.get("busy"):
        raise problem(409, "name", state["error"], "busy")
    if failure is not None:  # a server error: logged, and the state says what it was
        raise problem(500, "name", f"the rebuild failed: {state['error']}", "error")
    return JSONResponse(answer_of(state), 200)


def run_rebuild(service: Service, name: str, state: dict[str, Any]) -> Exception | None:
    """Rebuild ``name``, keeping ``state`` up to date; the failure, if any (a rebuild that
    failed resumes where it stopped next time)."""

    def progress(done: int, total: int) -> None:
        state.update(done=done, total=total)

    try:
        # Connections of its own: the service may shut down (and close its connections)
        # while a rebuild runs on; the rebuild then finishes, or resumes next time.
        with closing(ReadModels.open(service.url, service.settings)) as models:
            generation = rebuild(models.runner, name, on_progress=progress)
    except LockBusy as exc:
        state.update(state="failed", error=str(exc), busy=True)
        return exc
    except Exception as exc:
        state.update(state="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        log.exception("rebuilding %s failed", name)
        return exc
    state.update(state="done", generation=generation.generation, position=generation.position)
    return None


def answer_of(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state.get(k) for k in ("name", "state", "generation", "position", "error")}
