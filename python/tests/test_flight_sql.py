"""Flight SQL on the Flight port with a real client: ADBC's Flight SQL driver from PyPI
(``adbc-driver-flightsql``), through its DB-API module and pandas, on both backends."""

from __future__ import annotations

import pytest

import featherstore
from conftest import ServerProcess, user_rows, utc

flightsql = pytest.importorskip("adbc_driver_flightsql.dbapi")
adbc_manager = pytest.importorskip("adbc_driver_manager")


@pytest.fixture
def filled_set(client: featherstore.Client, user_set: str) -> str:
    # (user, day of January 2026, age, ctr_7d)
    rows = [("u1", 1, 30, 0.1), ("u1", 3, 32, 0.3), ("u2", 5, 50, None)]
    client.ingest(
        user_set,
        user_rows(
            [
                {"user_id": u, "event_timestamp": utc(2026, 1, day), "age": age, "ctr_7d": ctr}
                for u, day, age, ctr in rows
            ]
        ),
    )
    return user_set


@pytest.fixture
def connection(server: ServerProcess):
    with flightsql.connect(server.flight, autocommit=True) as conn:
        yield conn


def test_dbapi_query(connection, filled_set: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, max(age) AS oldest, count(*) AS n FROM {filled_set} "
            "GROUP BY user_id ORDER BY user_id"
        )
        assert cursor.fetchall() == [("u1", 32, 2), ("u2", 50, 1)]
        cursor.execute(f"SELECT * FROM {filled_set} ORDER BY event_timestamp")
        table = cursor.fetch_arrow_table()
    assert table.num_rows == 3
    assert table.column_names[0] == "user_id"
    assert table.column("event_timestamp").to_pylist()[0] == utc(2026, 1, 1)


def test_pandas_read_sql(connection, filled_set: str) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_sql(
        f"SELECT user_id, age, ctr_7d FROM {filled_set} WHERE age > 30 ORDER BY age",
        connection,
    )
    assert list(frame["user_id"]) == ["u1", "u2"]
    assert list(frame["age"]) == [32, 50]


def test_catalog_lists_every_set(connection, filled_set: str) -> None:
    objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["featherstore"]
    tables = [
        t["table_name"]
        for schema in objects[0]["catalog_db_schemas"]
        for t in schema["db_schema_tables"]
    ]
    assert filled_set in tables
    schema = connection.adbc_get_table_schema(filled_set)
    assert schema.names[:2] == ["user_id", "age"]
    info = connection.adbc_get_info()
    assert info["vendor_name"] == "FeatherStore"


def test_prepared_statement(connection, filled_set: str) -> None:
    with connection.cursor() as cursor:
        cursor.adbc_prepare(f"SELECT count(*) FROM {filled_set}")
        cursor.execute(f"SELECT count(*) FROM {filled_set}")
        assert cursor.fetchone() == (3,)


@pytest.mark.parametrize(
    "sql",
    [
        "DROP VIEW {set}",
        "DELETE FROM {set}",
        "CREATE TABLE t AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/featherstore-flight-sql-test.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "ATTACH '/tmp/featherstore-flight-sql-test.db'",
        "SET memory_limit = '100GB'",
        "SELECT 1; SELECT 2",
    ],
)
def test_anything_but_a_query_is_refused(connection, filled_set: str, sql: str) -> None:
    with connection.cursor() as cursor:
        with pytest.raises(adbc_manager.ProgrammingError, match="INVALID_ARGUMENT"):
            cursor.execute(sql.format(set=filled_set))
        cursor.execute(f"SELECT count(*) FROM {filled_set}")
        assert cursor.fetchone() == (3,)
