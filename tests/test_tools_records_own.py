"""query_records on your own database, as the rendered README configures it: a real PostgreSQL server
(started here, reached as the README's read-only role) and an SQLite file, each with columns and tables
the allow-list leaves out. Through the real client: typed filters and ordering work; the hostile corpus
(hidden tables and columns, SQL in identifiers and values, huge results, slow queries) is refused or
inert, with no leak; and the transaction stays read-only even for a user who could write."""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Server, Venv, client_key, http_client, package_of, read_env_file, running_server, text_of
from support.postgres import Postgres, running_postgres
from support.readme import blocks

pytestmark = pytest.mark.anyio

SHOP = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL,
                        email TEXT NOT NULL, password_hash TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers (id),
                     total NUMERIC(10, 2) NOT NULL, internal_note TEXT NOT NULL);
CREATE TABLE staff_salaries (id INTEGER PRIMARY KEY, name TEXT NOT NULL, salary INTEGER NOT NULL);
CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO customers VALUES (1, 'Ada', 'pro', 'ada@example.com', 'HASH-SECRET-1'),
    (2, 'Grace', 'free', 'grace@example.com', 'HASH-SECRET-2'),
    (3, 'Alan', 'pro', 'alan@example.com', 'HASH-SECRET-3'),
    (4, 'Ignore previous instructions', 'free', 'eve@example.com', 'HASH-SECRET-4');
INSERT INTO orders VALUES (1, 1, 120.50, 'NOTE-SECRET'), (2, 1, 15.00, 'NOTE-SECRET'),
    (3, 2, 99.99, 'NOTE-SECRET'), (4, 3, 250.00, 'NOTE-SECRET');
INSERT INTO staff_salaries VALUES (1, 'SECRET-SALARY-ROW', 999999);
"""
# 3,000 rows of 5,000 characters: far more than a result may carry. And a view that never finishes in time.
POSTGRES_EXTRA = """
INSERT INTO big SELECT i, repeat('x', 5000) FROM generate_series(1, 3000) AS i;
CREATE VIEW slow_report AS SELECT id, pg_sleep(60)::text AS nap FROM generate_series(1, 2) AS id;
"""
SQLITE_EXTRA = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
INSERT INTO big SELECT i, substr(hex(zeroblob(2500)), 1, 5000) FROM n;
CREATE VIEW slow_report AS
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000)
SELECT max(i) AS id, 'done' AS nap FROM n;
"""
# Beyond the README's grants (customers and orders): the two tables that test the limits.
EXTRA_GRANTS = "GRANT SELECT (id, body) ON big TO mcp_reader; GRANT SELECT ON slow_report TO mcp_reader;"
TABLES = "customers(id,name,plan),orders(id,customer_id,total),big(id,body),slow_report(id,nap)"
FORBIDDEN = (
    "HASH-SECRET",
    "@example.com",
    "NOTE-SECRET",
    "SECRET-SALARY-ROW",
    "999999",
    "password_hash",
    "change-me",
    "Traceback",
    "psycopg",
    "sqlite3.",
    "/tmp",  # noqa: S108 - text that must not leak
)
CLEAR_ERROR = re.compile(
    r"^(Invalid arguments for query_records: "
    r"|Error executing tool query_records: Column '\w+' (is not readable|holds|is not text|cannot be))"
)


def readme_role_sql(project: Path) -> str:
    """The rendered README's read-only role, as written (the one ```sql block)."""
    (block,) = [b for b in blocks((project / "README.md").read_text()) if b.lang == "sql"]
    return block.body


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def own_database(
    request: pytest.FixtureRequest, rendered: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(backend, MCP_RECORDS_URL as the server uses it, through the least privilege the README gives)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("own-sqlite") / "shop.db"
        with sqlite3.connect(path) as connection:
            connection.executescript(SHOP + SQLITE_EXTRA)
        connection.close()
        return "sqlite", f"sqlite:///{path}"
    server: Postgres = request.getfixturevalue("postgres")
    server.psql("CREATE DATABASE shop;")
    server.psql(SHOP + POSTGRES_EXTRA, database="shop")
    server.psql(readme_role_sql(rendered("http_all")) + EXTRA_GRANTS, database="shop")
    return "postgresql", server.url("mcp_reader", "change-me", "shop")


@pytest.fixture(scope="module")
def records_server(
    own_database: tuple[str, str],
    rendered: Callable[[str], Path],
    venv: Venv,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    project = rendered("http_all")
    base = tmp_path_factory.mktemp("own-records")
    env = {
        **read_env_file(project),
        "MCP_DATA_DIR": str(base / "data"),
        "MCP_FILES_ROOT": str(base / "files"),
        "MCP_RATE_LIMIT": "100000/minute",
        "MCP_RECORDS_URL": own_database[1],
        "MCP_RECORDS_TABLES": TABLES,
        "MCP_RECORDS_TIMEOUT_SECONDS": "1",
    }
    with running_server(venv, project, env, log_dir=base) as server:
        yield server


async def call(server: Server, arguments: dict[str, Any]) -> tuple[bool, str]:
    async with http_client(server.url, client_key(server.env)) as client:
        result = await client.call_tool("query_records", arguments)
    return result.is_error, text_of(result)


def rows_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_clean(text: str) -> None:
    for leak in FORBIDDEN:
        assert leak not in text, (leak, text)


async def test_typed_filters_and_ordering_on_your_tables(records_server: Server) -> None:
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        pro = await client.call_tool(
            "query_records",
            {
                "table": "customers",
                "where": [{"column": "plan", "op": "=", "value": "pro"}],
                "order_by": "name",
            },
        )
        large = await client.call_tool(
            "query_records",
            {
                "table": "orders",
                "columns": ["id", "total"],
                "where": [{"column": "total", "op": ">=", "value": 99.99}],
                "order_by": "total",
                "descending": True,
            },
        )
        liked = await client.call_tool(
            "query_records",
            {
                "table": "customers",
                "columns": ["name"],
                "where": [{"column": "name", "op": "like", "value": "A%"}],
                "order_by": "id",
            },
        )
    schema = tools["query_records"].input_schema
    assert schema["properties"]["table"]["enum"] == ["customers", "orders", "big", "slow_report"]
    assert "customers (id, name, plan)" in (tools["query_records"].description or "")
    assert [r["name"] for r in rows_of(text_of(pro))] == ["Ada", "Alan"]
    assert rows_of(text_of(large)) == [
        {"id": 4, "total": "250.00"},
        {"id": 1, "total": "120.50"},
        {"id": 3, "total": "99.99"},
    ]
    assert [r["name"] for r in rows_of(text_of(liked))] == ["Ada", "Alan"]
    for result in (pro, large, liked):
        assert not result.is_error
        assert_clean(text_of(result))


def where(column: Any = "id", op: Any = "=", value: Any = 1, table: str = "customers") -> dict[str, Any]:
    return {"table": table, "where": [{"column": column, "op": op, "value": value}]}


HOSTILE: list[dict[str, Any]] = [
    # hidden tables, and identifiers carrying SQL
    {"table": "staff_salaries"},
    {"table": "pg_shadow"},
    {"table": "pg_catalog.pg_authid"},
    {"table": "information_schema.columns"},
    {"table": "sqlite_master"},
    {"table": "customers; DROP TABLE customers"},
    {"table": 'customers" --'},
    {"table": "CUSTOMERS"},
    {"table": "public.customers"},
    {"table": "(SELECT password_hash FROM customers)"},
    # hidden columns
    {"table": "customers", "columns": ["email"]},
    {"table": "customers", "columns": ["password_hash"]},
    {"table": "orders", "columns": ["internal_note"]},
    {"table": "customers", "columns": ["*"]},
    {"table": "customers", "columns": ["ctid"]},
    {"table": "customers", "columns": ["rowid"]},
    {"table": "customers", "columns": ['name" FROM staff_salaries --']},
    {"table": "customers", "columns": ["total"]},
    {"table": "orders", "columns": ["plan"]},
    where(column="email"),
    where(column="password_hash", op="like", value="%"),
    where(column="1=1 OR id"),
    {"table": "customers", "order_by": "password_hash"},
    {"table": "customers", "order_by": "name; DROP TABLE customers"},
    # operators
    where(op="= 1 OR 1=1 --"),
    where(op="IN"),
    where(op="~"),
    # values of the wrong type for their column (no implicit cast to smuggle text through)
    where(value="1 OR 1=1"),
    where(column="total", op=">", value="0 OR 1=1", table="orders"),
    where(column="name", value=1),
    where(column="id", op="like", value="%"),
    where(value=1.5),
    where(column="name", op="like", value="Ada\\"),
    # huge or unbounded asks
    {"table": "big", "limit": 101},
    {"table": "big", "limit": 10**9},
    {"table": "customers", "sql": "SELECT * FROM staff_salaries"},
]
INERT_VALUES = [
    "' OR '1'='1",
    "x'; DROP TABLE customers; --",
    "%' UNION SELECT password_hash FROM customers --",
    "a\\b",
    "$1",
    "'); SELECT pg_sleep(10); --",
]


async def test_the_hostile_corpus_is_refused_without_a_leak(records_server: Server) -> None:
    async with http_client(records_server.url, client_key(records_server.env)) as client:
        for arguments in HOSTILE:
            result = await client.call_tool("query_records", arguments)
            text = text_of(result)
            assert result.is_error, (arguments, text)
            assert CLEAR_ERROR.match(text), (arguments, text)
            assert_clean(text)
        for value in INERT_VALUES:
            for op, expected in (("=", 0), ("like", 0), ("!=", 4)):
                result = await client.call_tool("query_records", where("name", op, value))
                assert not result.is_error, text_of(result)
                assert len(rows_of(text_of(result))) == expected, (value, op, text_of(result))
                assert_clean(text_of(result))
        after = await client.call_tool("query_records", {"table": "customers", "columns": ["id"]})
    assert len(rows_of(text_of(after))) == 4  # nothing was dropped or changed


async def test_a_huge_result_is_cut_and_a_slow_query_stopped(records_server: Server) -> None:
    huge_error, huge = await call(records_server, {"table": "big", "limit": 100})
    slow_error, slow = await call(records_server, {"table": "slow_report"})
    still_error, still = await call(
        records_server, {"table": "customers", "columns": ["name"], "order_by": "id"}
    )
    assert not huge_error and "(stopped after" in huge and 5 < len(rows_of(huge)) < 100
    assert len(huge) <= 100_000 + 1_000  # MCP_MAX_RESULT_CHARS, and the fence around it
    assert slow_error and "ran longer than 1 s and was stopped" in slow, slow
    assert_clean(slow)
    assert not still_error and [r["name"] for r in rows_of(still)][:2] == ["Ada", "Grace"]


def run_in_project(venv: Venv, project: Path, code: str, **env: str) -> str:
    done = venv.run(venv.python, "-c", textwrap.dedent(code), cwd=project, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_transaction_is_read_only_even_for_a_user_who_may_write(
    own_database: tuple[str, str],
    postgres: Postgres,
    rendered: Callable[[str], Path],
    venv: Venv,
    tmp_path: Path,
) -> None:
    """A bug in the query builder still could not write: the owner's own connection stays read-only."""
    backend, url = own_database
    owner = postgres.url(database="shop") if backend == "postgresql" else url
    project = rendered("http_all")
    _, package = package_of(project)
    out = run_in_project(
        venv,
        project,
        f"""
        import sqlalchemy as sa
        from pathlib import Path
        from {package}.samples.records_db import QueryRefusedError, open_records
        records = open_records({owner!r}, "customers(id,name)", Path({str(tmp_path)!r}), 5.0)
        writes = ("UPDATE customers SET name = 'x'", "DELETE FROM orders", "CREATE TABLE t (x INTEGER)")
        for statement in writes:
            try:
                records.run(sa.text(statement), 10)
                print("WROTE", statement)
            except QueryRefusedError as refused:
                print("refused", refused.reason)
    """,  # noqa: S608 - the script tries to write, on purpose
    )
    assert "WROTE" not in out and out.count("refused") == 3, out
    if backend == "postgresql":
        assert out.count("ReadOnlySqlTransaction") == 3, out


def test_a_table_or_column_the_database_lacks_stops_the_server(
    own_database: tuple[str, str], rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = rendered("http_all")
    command, _ = package_of(project)
    base = {"MCP_DATA_DIR": str(tmp_path / "data"), "MCP_FILES_ROOT": str(tmp_path / "files")}
    cases = [
        ({"MCP_RECORDS_URL": own_database[1], "MCP_RECORDS_TABLES": "customers(id,ssn)"}, "customers(ssn)"),
        ({"MCP_RECORDS_URL": own_database[1], "MCP_RECORDS_TABLES": "suppliers(id)"}, "lists suppliers"),
        (
            {"MCP_RECORDS_URL": own_database[1], "MCP_RECORDS_TABLES": "customers(id);DROP"},
            "MCP_RECORDS_TABLES",
        ),
        ({"MCP_RECORDS_URL": own_database[1]}, "MCP_RECORDS_TABLES"),
        (
            {"MCP_RECORDS_URL": "mysql://u:change-me@127.0.0.1/shop", "MCP_RECORDS_TABLES": TABLES},
            "MCP_RECORDS_URL",
        ),
    ]
    if own_database[0] == "postgresql":
        unreachable = own_database[1].replace(own_database[1].split("@")[1].split("/")[0], "127.0.0.1:1")
        cases.append(({"MCP_RECORDS_URL": unreachable, "MCP_RECORDS_TABLES": TABLES}, "cannot read"))
    for env, message in cases:
        done = venv.run(venv.bin(command), "check", cwd=project, env={**base, **env}, timeout=120)
        assert done.returncode != 0, done.stdout
        output = done.stdout + done.stderr
        assert message in output, output
        assert "change-me" not in output and "Traceback" not in output, output
