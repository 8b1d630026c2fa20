//! One small SQL surface over both drivers, so projections, queries and billing are written once.
//!
//! Statements are written in the dialect both databases share: `?N` placeholders (rewritten to
//! `$N` for PostgreSQL), `ON CONFLICT … DO NOTHING / DO UPDATE`, `COALESCE`, `CAST(… AS BIGINT)`
//! around sums (PostgreSQL sums BIGINT into NUMERIC). Where the dialects part, `Db::pick` chooses.
//! Values cross as `Value` (in) and `ValueRef` (out); each driver converts them, so neither leaks
//! its types. The drivers cache prepared statements by their text.

use crate::store::StoreError;
use crate::store::postgres::driver as pg;
use crate::store::sqlite::driver as lite;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection of either backend, borrowed for one query or one transaction's work.
#[derive(Clone, Copy)]
pub enum Db<'c> {
    Sqlite(&'c lite::Conn),
    Postgres(&'c pg::Conn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    /// An unsigned integer past `i64::MAX`: refused when bound.
    OutOfRange,
}

/// A value read from a row.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

pub trait ToSql {
    fn to_sql(&self) -> Value<'_>;
}

pub trait FromSql: Sized {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String>;
}

/// Parameters as a slice of `&dyn ToSql`: `params![a, b, c]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::sql::db::ToSql] };
    ($($param:expr),+ $(,)?) => { &[$(&$param as &dyn $crate::store::sql::db::ToSql),+] as &[&dyn $crate::store::sql::db::ToSql] };
}
pub(crate) use params;

/// A prepared statement of either backend (`Db::prepare`).
pub enum Prepared<'c> {
    Sqlite(lite::Statement<'c>),
    Postgres(&'c pg::Conn, pg::Statement),
}

impl Prepared<'_> {
    /// Run it once; answers the rows it changed.
    pub fn execute(&mut self, params: &[&dyn ToSql]) -> Result<usize> {
        match self {
            Prepared::Sqlite(statement) => lite::execute_prepared(statement, params),
            Prepared::Postgres(conn, statement) => pg::execute_prepared(conn, statement, params),
        }
    }
}

/// One row of an answer.
pub enum Row<'r> {
    Sqlite(&'r lite::Row<'r>),
    Postgres(&'r pg::Row),
}

impl Row<'_> {
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T> {
        let value = match self {
            Row::Sqlite(row) => lite::value(row, index)?,
            Row::Postgres(row) => pg::value(row, index)?,
        };
        T::from_sql(value).map_err(|why| StoreError::Backend(format!("column {index}: {why}")))
    }
}

impl<'c> Db<'c> {
    pub fn dialect(self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The statement text of this connection's dialect.
    pub fn pick<'s>(self, sqlite: &'s str, postgres: &'s str) -> &'s str {
        match self.dialect() {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }

    /// DDL written for SQLite, in this connection's dialect. The projection tables are declared
    /// once: STRICT tables, INTEGER, REAL and BLOB become BIGINT, DOUBLE PRECISION and BYTEA.
    pub fn ddl<'s>(self, sqlite: &'s str) -> std::borrow::Cow<'s, str> {
        match self.dialect() {
            Dialect::Sqlite => sqlite.into(),
            Dialect::Postgres => postgres_ddl(sqlite).into(),
        }
    }

    /// An expression for the text of a top-level field of a JSON text column.
    pub fn json_text(self, column: &str, field: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
            Dialect::Postgres => format!("({column}::json ->> '{field}')"),
        }
    }

    /// An expression true when text `haystack` contains the literal `needle`.
    pub fn contains(self, haystack: &str, needle: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("instr({haystack}, '{needle}') > 0"),
            Dialect::Postgres => format!("strpos({haystack}, '{needle}') > 0"),
        }
    }

    /// A join that keeps the written order: SQLite's CROSS JOIN tells its planner to scan the left
    /// table first; PostgreSQL plans joins itself (and has no CROSS JOIN … ON).
    pub fn ordered_join(self) -> &'static str {
        self.pick("CROSS JOIN", "JOIN")
    }

    /// Run one statement; answers the rows it changed.
    pub fn execute(self, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
        match self {
            Db::Sqlite(conn) => lite::execute(conn, sql, params),
            Db::Postgres(conn) => pg::execute(conn, sql, params),
        }
    }

    /// A statement prepared once for many executions (a hot loop: looking a statement up by its
    /// text costs a hash of the text each time).
    pub fn prepare(self, sql: &str) -> Result<Prepared<'c>> {
        Ok(match self {
            Db::Sqlite(conn) => Prepared::Sqlite(lite::prepare_cached(conn, sql)?),
            Db::Postgres(conn) => Prepared::Postgres(conn, pg::statement(conn, sql)?),
        })
    }

    /// Run statements without parameters (transaction control, DDL).
    pub fn batch(self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(conn) => lite::batch(conn, sql),
            Db::Postgres(conn) => pg::batch(conn, sql),
        }
    }

    /// Every row of the answer, mapped.
    pub fn query_map<T>(
        self,
        sql: &str,
        params: &[&dyn ToSql],
        mut map: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.for_each(sql, params, &mut |row| {
            out.push(map(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row of the answer, mapped, if there is one.
    pub fn query_opt<T>(
        self,
        sql: &str,
        params: &[&dyn ToSql],
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut out = None;
        self.for_each(sql, params, &mut |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// The first row of the answer, mapped; no row is an error.
    pub fn query_row<T>(self, sql: &str, params: &[&dyn ToSql], map: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| StoreError::Backend(format!("no row for a query that expects one: {}", first_line(sql))))
    }

    /// Visit rows until `visit` answers false.
    fn for_each(self, sql: &str, params: &[&dyn ToSql], visit: &mut dyn FnMut(&Row<'_>) -> Result<bool>) -> Result<()> {
        match self {
            Db::Sqlite(conn) => lite::for_each(conn, sql, params, visit),
            Db::Postgres(conn) => pg::for_each(conn, sql, params, visit),
        }
    }
}

fn postgres_ddl(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len());
    for line in sqlite.lines() {
        let line = line.replace(") STRICT, WITHOUT ROWID;", ");").replace(") STRICT;", ");");
        let words: Vec<String> = line
            .split(' ')
            .map(|word| {
                let (name, rest) = word.split_at(word.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(word.len()));
                let name = match name {
                    "INTEGER" => "BIGINT",
                    "REAL" => "DOUBLE PRECISION",
                    "BLOB" => "BYTEA",
                    other => other,
                };
                format!("{name}{rest}")
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or_default()
}

/// A stored value that does not mean what its column should.
pub fn corrupt(index: usize, what: &str) -> StoreError {
    StoreError::Backend(format!("column {index}: {what}"))
}

macro_rules! to_sql_int {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Value<'_> {
                i64::try_from(*self).map_or(Value::OutOfRange, Value::Int)
            }
        }
        impl FromSql for $t {
            fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
                match value {
                    ValueRef::Int(i) => <$t>::try_from(i).map_err(|_| format!("{i} is out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
to_sql_int!(i64, i32, u32, u64, usize, u16, u8);

impl ToSql for bool {
    fn to_sql(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl FromSql for bool {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl FromSql for f64 {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl FromSql for String {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Text(text) => Ok(text.to_owned()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl ToSql for std::borrow::Cow<'_, str> {
    fn to_sql(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<const N: usize> ToSql for [u8; N] {
    fn to_sql(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<const N: usize> FromSql for [u8; N] {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Blob(bytes) => bytes.try_into().map_err(|_| format!("expected {N} bytes, found {}", bytes.len())),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToSql::to_sql)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(value: ValueRef<'_>) -> std::result::Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_sql(other).map(Some),
        }
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Value<'_> {
        (**self).to_sql()
    }
}
