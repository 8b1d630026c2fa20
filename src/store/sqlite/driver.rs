//! The portable SQL surface (`store::sql::db`) on rusqlite: statements come from rusqlite's
//! cache, values are bound and read without copies.

use rusqlite::types::ValueRef as Lite;

use crate::store::StoreError;
use crate::store::sql::db::{Result, Row as AnyRow, ToSql, Value, ValueRef};

pub type Conn = rusqlite::Connection;
pub type Row<'r> = rusqlite::Row<'r>;
pub type Statement<'c> = rusqlite::CachedStatement<'c>;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {err}"))
    }
}

pub fn prepare_cached<'c>(conn: &'c Conn, sql: &str) -> Result<Statement<'c>> {
    Ok(conn.prepare_cached(sql)?)
}

fn prepare<'c>(conn: &'c Conn, sql: &str, params: &[&dyn ToSql]) -> Result<Statement<'c>> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    Ok(statement)
}

fn bind(statement: &mut Statement<'_>, params: &[&dyn ToSql]) -> Result<()> {
    for (index, param) in params.iter().enumerate() {
        let value = match param.to_sql() {
            Value::Null => Lite::Null,
            Value::Int(i) => Lite::Integer(i),
            Value::Real(f) => Lite::Real(f),
            Value::Text(text) => Lite::Text(text.as_bytes()),
            Value::Blob(bytes) => Lite::Blob(bytes),
            Value::OutOfRange => {
                return Err(StoreError::Backend(format!("parameter {} is out of range for SQL", index + 1)));
            }
        };
        statement.raw_bind_parameter(index + 1, rusqlite::types::ToSqlOutput::Borrowed(value))?;
    }
    Ok(())
}

pub fn execute_prepared(statement: &mut Statement<'_>, params: &[&dyn ToSql]) -> Result<usize> {
    bind(statement, params)?;
    Ok(statement.raw_execute()?)
}

pub fn execute(conn: &Conn, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
    let mut statement = prepare(conn, sql, params)?;
    Ok(statement.raw_execute()?)
}

pub fn batch(conn: &Conn, sql: &str) -> Result<()> {
    Ok(conn.execute_batch(sql)?)
}

pub fn for_each(
    conn: &Conn,
    sql: &str,
    params: &[&dyn ToSql],
    visit: &mut dyn FnMut(&AnyRow<'_>) -> Result<bool>,
) -> Result<()> {
    let mut statement = prepare(conn, sql, params)?;
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next()? {
        if !visit(&AnyRow::Sqlite(row))? {
            break;
        }
    }
    Ok(())
}

pub fn value<'r>(row: &'r Row<'r>, index: usize) -> Result<ValueRef<'r>> {
    Ok(match row.get_ref(index)? {
        Lite::Null => ValueRef::Null,
        Lite::Integer(i) => ValueRef::Int(i),
        Lite::Real(f) => ValueRef::Real(f),
        Lite::Text(bytes) => ValueRef::Text(
            std::str::from_utf8(bytes).map_err(|e| StoreError::Backend(format!("column {index} is not UTF-8: {e}")))?,
        ),
        Lite::Blob(bytes) => ValueRef::Blob(bytes),
    })
}
