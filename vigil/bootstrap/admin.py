"""The first admin, written to etcd once its members run: the user and password that
``vigil cluster init`` made (DIR/admin/admin.json), reached with the operator's etcd
client certificate. The lab does the same with its own cluster directory."""
from __future__ import annotations

from typing import Any

from vigil.bootstrap.cluster_dir import ADMIN_USER, Cluster
from vigil.service import access
from vigil.store.etcd import Store, run_with_store


def create_admin(c: Cluster, token_name: str | None = None, reset: bool = False,
                 endpoints: list[str] | None = None) -> dict[str, Any]:
    """Create the admin user (``reset``: set its password again if it exists, else leave
    it); with ``token_name`` also an API token for it. Returns {"created", "token"}."""
    password = c.admin_password()

    async def go(store: Store) -> dict[str, Any]:
        created = True
        try:
            await access.add_user(store, ADMIN_USER, password, "admin")
        except access.Conflict:
            created = False
            if reset:
                await access.set_password(store, ADMIN_USER, password)
        tok = await access.create_token(store, ADMIN_USER, token_name, None) if token_name else None
        return {"created": created, "token": tok["token"] if tok else None}

    return run_with_store(endpoints or c.endpoints, go, timeout=10, tls=c.admin_tls())
