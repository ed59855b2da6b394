"""The read peer: what a user would serve the loaded customers with instead of this project.

A FastAPI app over psycopg2, as the compared services are written: the same page/limit
contract (`{data, total, page, limit}`; page and limit checked, 400 otherwise) and the detail
route, no authentication, no throttling. A list request counts the table and reads one page
with ORDER BY customer_id LIMIT/OFFSET; a detail request reads one row by id. It serves the
table `peer_read.customers` (bench/peers.py fills it with the rows our own API serves, typed as
dlt types them: text ids) of the database in PEER_DATABASE_URL, with or without an index on
the id (bench/peers.py measures both and keeps the better).

It runs in bench/peers.py's own virtual environment and imports nothing of the project:

    PEER_DATABASE_URL=postgres://... uvicorn bench.peer_api:app --workers 2 --port 8100
"""

import os
from contextlib import asynccontextmanager
from decimal import Decimal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg2.extras import RealDictCursor
from psycopg2.pool import ThreadedConnectionPool

TABLE = "peer_read.customers"
COLUMNS = (
    "customer_id, first_name, last_name, email, phone, address, date_of_birth, account_balance, created_at, updated_at"
)
MAX_LIMIT = 100
pool: ThreadedConnectionPool | None = None


@asynccontextmanager
async def lifespan(app: FastAPI):
    global pool
    # As many connections as FastAPI's thread pool runs sync endpoints at once (40).
    pool = ThreadedConnectionPool(1, 40, os.environ["PEER_DATABASE_URL"])
    yield
    pool.closeall()


app = FastAPI(lifespan=lifespan)


def _rows(sql: str, params: tuple) -> list[dict]:
    connection = pool.getconn()
    try:
        connection.autocommit = True
        with connection.cursor(cursor_factory=RealDictCursor) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        pool.putconn(connection)


def _json(row: dict) -> dict:
    return {
        key: float(value) if isinstance(value, Decimal) else value.isoformat() if hasattr(value, "isoformat") else value
        for key, value in row.items()
    }


def _whole(value: str | None, default: int) -> int | None:
    if value is None:
        return default
    return int(value) if value.isdigit() and value.isascii() else None


@app.get("/api/customers")
def list_customers(request: Request):
    page = _whole(request.query_params.get("page"), 1)
    limit = _whole(request.query_params.get("limit"), 10)
    errors = {}
    if page is None or page < 1:
        errors["page"] = ["Must be an integer of at least 1."]
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        errors["limit"] = [f"Must be an integer between 1 and {MAX_LIMIT}."]
    if errors:
        return JSONResponse(errors, status_code=400)
    total = _rows(f"SELECT count(*) AS total FROM {TABLE}", ())[0]["total"]  # noqa: S608 - constants only
    rows = _rows(
        f"SELECT {COLUMNS} FROM {TABLE} ORDER BY customer_id LIMIT %s OFFSET %s",  # noqa: S608
        (limit, (page - 1) * limit),
    )
    return {"data": [_json(row) for row in rows], "total": total, "page": page, "limit": limit}


@app.get("/api/customers/{customer_id}")
def get_customer(customer_id: str):
    rows = _rows(f"SELECT {COLUMNS} FROM {TABLE} WHERE customer_id = %s", (customer_id,))  # noqa: S608
    if not rows:
        return JSONResponse({"detail": "No such customer."}, status_code=404)
    return _json(rows[0])
