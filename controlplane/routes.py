"""Route tables: request handlers as module-level functions instead of closures.

A module declares `routes = Routes()` and decorates its handlers, which take the object
they work with (the `AppContext`, or the dashboard's `Dashboard`) as their first argument:

    @routes.get("/stacks/<stack_id>")
    async def get_stack(ctx: AppContext, stack_id: str) -> dict[str, Any]: ...

Its `blueprint()`/`register()` then calls `routes.bind(bp, ctx)`, which adds every handler
to the blueprint with that object bound. The endpoint is the function's name, as Quart's
own decorators make it, so `url_for`, the login check's public endpoints and the tests see
the same names as before. A handler stays an ordinary function: readable at the top level
and callable from another handler (`handler(ctx, ...)`).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any

from quart import Blueprint

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    rule: str
    handler: Handler


class Routes:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, rule: str) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            self.routes.append(Route(method, rule, handler))
            return handler

        return add

    def get(self, rule: str) -> Callable[[Handler], Handler]:
        return self.route("GET", rule)

    def post(self, rule: str) -> Callable[[Handler], Handler]:
        return self.route("POST", rule)

    def put(self, rule: str) -> Callable[[Handler], Handler]:
        return self.route("PUT", rule)

    def delete(self, rule: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", rule)

    def bind(self, bp: Blueprint, bound: object) -> None:
        """Add every route to `bp`, each handler called with `bound` first."""
        for r in self.routes:
            view = update_wrapper(partial(r.handler, bound), r.handler)
            bp.add_url_rule(r.rule, r.handler.__name__, view, methods=[r.method])
