"""query_records on a rendered HTTP server, through the real client: injection through every argument
is refused, values are bound (never spliced), and nothing but the allowed columns ever comes back."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from support import (
    Server,
    Venv,
    clean_env,
    client_key,
    http_client,
    package_of,
    read_env_file,
    running_server,
    text_of,
)
from support.perimeter import security_events
from support.tooling import all_events, refusals_for

pytestmark = pytest.mark.anyio

# Data the database holds but query_records must never return.
FORBIDDEN = ("SECRET-SALARY-ROW", "999999", "cost_price", "41.5", "@example.com", "customer_email", "salary")
CLEAR_ERROR = re.compile(
    r"^(Invalid arguments for query_records: "
    r"|Error executing tool query_records: Column '.+' is not readable)"
)


DIGEST_KEY = "audit-digest-key-for-the-records-tests-0123456789"


@pytest.fixture(scope="module")
def records_server(
    rendered: Callable[[str], Path], venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    project = rendered("http_all")
    base = tmp_path_factory.mktemp("records-tool")
    env = {
        **read_env_file(project),
        "MCP_DATA_DIR": str(base / "data"),
        "MCP_FILES_ROOT": str(base / "files"),
        "MCP_RATE_LIMIT": "100000/minute",
        "MCP_AUDIT_DIGEST_KEY": DIGEST_KEY,
    }
    with running_server(venv, project, env, log_dir=base) as server:
        yield server


def where(column: Any = "id", op: Any = "=", value: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"table": "products", "where": [{"column": column, "op": op, "value": value, **extra}]}


HOSTILE: list[dict[str, Any]] = [
    # table
    {"table": "staff_salaries"},
    {"table": "sqlite_master"},
    {"table": "sqlite_schema"},
    {"table": "products; DROP TABLE products"},
    {"table": "products--"},
    {"table": "PRODUCTS"},
    {"table": "products\x00"},
    {"table": "main.products"},
    {"table": "(SELECT * FROM staff_salaries)"},
    {"table": "products UNION SELECT name, salary, 1, 1, 1 FROM staff_salaries"},
    {"table": ""},
    {"table": ["products"]},
    {"table": None},
    {},
    # columns
    {"table": "products", "columns": ["cost_price"]},
    {"table": "orders", "columns": ["customer_email"]},
    {"table": "products", "columns": ["*"]},
    {"table": "products", "columns": ["rowid"]},
    {"table": "products", "columns": ['name" FROM staff_salaries --']},
    {"table": "products", "columns": ["id, cost_price"]},
    {"table": "products", "columns": ["products.cost_price"]},
    {"table": "products", "columns": ["(SELECT salary FROM staff_salaries)"]},
    {"table": "products", "columns": ["status"]},
    {"table": "orders", "columns": ["price"]},
    {"table": "products", "columns": ["name"] * 11},
    {"table": "products", "columns": "name"},
    {"table": "products", "columns": [{"name": 1}]},
    # where: column
    where(column="cost_price"),
    where(column="1=1 OR id"),
    where(column="salary"),
    where(column="quantity"),
    where(column=None),
    # where: operator
    where(op="= 1 OR 1=1 --"),
    where(op="IN"),
    where(op="GLOB"),
    where(op="MATCH"),
    where(op="||"),
    where(op="LIKE"),
    where(op=";"),
    where(op="IS NOT"),
    where(op="= ? OR ?"),
    # where: value
    where(value={"$gt": 0}),
    where(value=[1, 2]),
    where(value=None),
    where(value="x" * 201),
    where(value=10**20),
    where(value=1e300),
    where(value={}),
    # where: shape
    where(extra="DROP TABLE products"),
    {"table": "products", "where": [where()["where"][0]] * 6},
    {"table": "products", "where": "id = 1"},
    {"table": "products", "where": [["id", "=", 1]]},
    # order_by, descending, limit
    {"table": "products", "order_by": "cost_price"},
    {"table": "products", "order_by": "price; DROP TABLE products"},
    {"table": "products", "order_by": "(SELECT salary FROM staff_salaries)"},
    {"table": "products", "order_by": "status"},
    {"table": "products", "descending": "DESC; DROP TABLE products"},
    {"table": "products", "descending": [True]},
    {"table": "products", "limit": 0},
    {"table": "products", "limit": -1},
    {"table": "products", "limit": 101},
    {"table": "products", "limit": 10**12},
    {"table": "products", "limit": "10; DROP TABLE products"},
    {"table": "products", "limit": 1.5},
    # extra arguments
    {"table": "products", "sql": "SELECT * FROM staff_salaries"},
    {"table": "products", "raw": True},
]

# Values are bound parameters: SQL in them is inert text that matches nothing.
INERT_VALUES = [
    "' OR '1'='1",
    "1; DROP TABLE products",
    "1 UNION SELECT salary FROM staff_salaries",
    "x' UNION SELECT name, salary, 1, 1, 1 FROM staff_salaries --",
    "%' OR 1=1 --",
    "\x00",
    "'); ATTACH 'x' AS y; --",
]


def assert_clean(text: str) -> None:
    for leak in (*FORBIDDEN, "Traceback", "sqlite3.", "/tmp"):  # noqa: S108 - text that must not leak
        assert leak not in text, (leak, text)


async def test_allowed_queries_return_only_allowed_columns(records_server: Server) -> None:
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        everything = await client.call_tool("query_records", {"table": "products", "limit": 100})
        filtered = await client.call_tool(
            "query_records",
            {
                "table": "orders",
                "columns": ["id", "status"],
                "where": [
                    {"column": "status", "op": "=", "value": "shipped"},
                    {"column": "quantity", "op": ">", "value": 1},
                ],
                "order_by": "id",
                "descending": True,
            },
        )
        liked = await client.call_tool(
            "query_records",
            {
                "table": "products",
                "columns": ["name"],
                "where": [{"column": "name", "op": "like", "value": "%socks%"}],
            },
        )
    assert not everything.is_error
    body = text_of(everything)
    assert body.startswith('<untrusted-data source="records database">')
    rows = [json.loads(line) for line in body.splitlines() if line.startswith("{")]
    assert len(rows) == 8 and set(rows[0]) == {"id", "name", "category", "price", "stock"}
    assert_clean(body)
    assert [json.loads(line) for line in text_of(filtered).splitlines() if line.startswith("{")] == [
        {"id": 6, "status": "shipped"},
        {"id": 2, "status": "shipped"},
    ]
    assert '{"name": "Wool socks"}' in text_of(liked)


async def test_hostile_arguments_are_refused_with_an_event_each(records_server: Server) -> None:
    assert len(HOSTILE) >= 50
    admin = records_server.env["MCP_ADMIN_API_KEYS"]
    before = len(
        refusals_for(await anyio.to_thread.run_sync(all_events, records_server, admin), "query_records")
    )
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        for arguments in HOSTILE:
            result = await client.call_tool("query_records", arguments)
            text = text_of(result)
            assert result.is_error, (arguments, text)
            assert CLEAR_ERROR.match(text), (arguments, text)
            assert_clean(text)
        # The database is unchanged: every product is still there.
        after = await client.call_tool(
            "query_records", {"table": "products", "columns": ["id"], "limit": 100}
        )
    assert text_of(after).count('{"id": ') == 8
    refusals = refusals_for(
        await anyio.to_thread.run_sync(all_events, records_server, admin), "query_records"
    )
    assert len(refusals) - before == len(HOSTILE)
    assert all(event["event"] == "input_validation_failed" for event in refusals)


@pytest.mark.parametrize("value", INERT_VALUES)
async def test_sql_in_values_is_bound_not_run(records_server: Server, value: str) -> None:
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        for column, op in (("name", "="), ("name", "like"), ("category", "!=")):
            result = await client.call_tool(
                "query_records",
                {"table": "products", "where": [{"column": column, "op": op, "value": value}]},
            )
            text = text_of(result)
            assert not result.is_error, text
            assert_clean(text)
            expected_rows = 8 if op == "!=" else 0
            assert text.count('{"id": ') == expected_rows, text


async def test_personal_data_reaches_the_trail_only_as_a_searchable_digest(
    records_server: Server, rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    """The samples that take personal data declare it sensitive: the trail keeps a keyed digest, never the
    value, and `audit digest` (the value on stdin) prints the digest that finds it."""
    email, note = "alice.customer@example.org", "Call alice.customer@example.org about her refund"
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        query = {"table": "orders", "where": [{"column": "status", "op": "=", "value": email}]}
        assert not (await client.call_tool("query_records", query)).is_error
        assert not (await client.call_tool("add_note", {"text": note})).is_error
    calls = {
        e["tool"]: e["details"]["arguments"]
        for e in security_events(records_server)
        if e["event"] == "tool_called"
    }
    assert "alice.customer" not in records_server.log()
    command, _ = package_of(rendered("http_all"))

    def audit_digest(value: str) -> str:
        result = subprocess.run(
            [venv.bin(command), "audit", "digest"],
            input=value + "\n",
            cwd=tmp_path,
            env=clean_env({"MCP_AUDIT_DIGEST_KEY": DIGEST_KEY}),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    assert calls["add_note"] == {"text": audit_digest(note)}
    [condition] = calls["query_records"]["where"]
    assert condition["value"] == audit_digest(email) and condition["value"].startswith("hmac-sha256:")
    assert calls["query_records"]["table"] == "orders"  # arguments not declared sensitive: as before
