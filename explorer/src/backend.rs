//! The two databases the index lives in, behind one small interface: SQLite (the embedded
//! default) and PostgreSQL (an index that outgrows one machine or serves many readers). Every
//! query of the index is written once, in the SQL both accept, with `$1`-style parameters of
//! two types, integers and text; only the schema differs. A parameter PostgreSQL cannot type
//! from its use (`$1 IS NULL`) is written `CAST($1 AS TEXT)` or `CAST($1 AS BIGINT)`, which
//! both read the same way.

use postgres::types::{ToSql, Type};

/// Why the index could not answer or store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused, with its reason.
    #[error("index database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused, with its reason.
    #[error("index database (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    /// A value of a type the index does not store, or another misuse.
    #[error("index database: {0}")]
    Other(String),
}

/// A parameter or a column: the index stores integers and text only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
    /// NULL where an integer goes.
    NullInt,
    /// NULL where text goes.
    NullText,
}

impl Value {
    /// The integer, or an error naming the column.
    pub fn int(&self) -> Result<i64, DbError> {
        match self {
            Value::Int(i) => Ok(*i),
            other => Err(DbError::Other(format!(
                "expected an integer, found {other:?}"
            ))),
        }
    }

    /// The integer, or `None` for NULL.
    pub fn opt_int(&self) -> Result<Option<i64>, DbError> {
        match self {
            Value::NullInt | Value::NullText => Ok(None),
            other => other.int().map(Some),
        }
    }

    /// The text, or an error naming the column.
    pub fn text(&self) -> Result<String, DbError> {
        match self {
            Value::Text(s) => Ok(s.clone()),
            other => Err(DbError::Other(format!("expected text, found {other:?}"))),
        }
    }

    /// The text, or `None` for NULL.
    pub fn opt_text(&self) -> Result<Option<String>, DbError> {
        match self {
            Value::NullInt | Value::NullText => Ok(None),
            other => other.text().map(Some),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<Option<u64>> for Value {
    fn from(i: Option<u64>) -> Self {
        i.map_or(Value::NullInt, Value::from)
    }
}

impl From<Option<&str>> for Value {
    fn from(s: Option<&str>) -> Self {
        s.map_or(Value::NullText, Value::from)
    }
}

impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Self {
        s.map_or(Value::NullText, Value::Text)
    }
}

/// One connection to the index's database.
pub trait Backend: Send {
    /// Runs `sql` (with `$1`… parameters) and returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;
    /// Runs `sql` and returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs statements without parameters (the schema, `BEGIN`, `COMMIT`).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    /// Whether it is PostgreSQL, for the few things the two do differently (text search).
    fn is_postgres(&self) -> bool;
}

/// SQLite numbers its parameters `?1`; the queries are written `$1`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Backend for rusqlite::Connection {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut stmt = self.prepare_cached(&sqlite_sql(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(sqlite_value)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Integer(n) => Value::Int(n),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Null => Value::NullText,
                    other => {
                        return Err(DbError::Other(format!(
                            "column {i} holds {:?}",
                            other.data_type()
                        )))
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.prepare_cached(&sqlite_sql(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))? as u64)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.execute_batch(sql)?)
    }

    fn is_postgres(&self) -> bool {
        false
    }
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::NullInt | Value::NullText => rusqlite::types::Value::Null,
    }
}

const NULL_INT: Option<i64> = None;
const NULL_TEXT: Option<String> = None;

fn postgres_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|v| -> &(dyn ToSql + Sync) {
            match v {
                Value::Int(i) => i,
                Value::Text(s) => s,
                Value::NullInt => &NULL_INT,
                Value::NullText => &NULL_TEXT,
            }
        })
        .collect()
}

/// A PostgreSQL connection that prepares each statement once, as rusqlite's
/// `prepare_cached` does: a follower runs the same few statements for every claim.
pub struct Postgres {
    client: postgres::Client,
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

impl Postgres {
    pub fn connect(url: &str) -> Result<Self, DbError> {
        Ok(Postgres {
            client: postgres::Client::connect(url, postgres::NoTls)?,
            prepared: std::collections::HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(stmt) = self.prepared.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql)?;
        // Statements whose text varies (lists of parameters) are not kept forever.
        if self.prepared.len() >= 256 {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Backend for Postgres {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let stmt = self.statement(sql)?;
        let rows = self.client.query(&stmt, &postgres_params(params))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match *row.columns()[i].type_() {
                        Type::INT8 => Ok(row
                            .get::<_, Option<i64>>(i)
                            .map_or(Value::NullInt, Value::Int)),
                        Type::INT4 => Ok(row
                            .get::<_, Option<i32>>(i)
                            .map_or(Value::NullInt, |n| Value::Int(n.into()))),
                        Type::TEXT | Type::VARCHAR => Ok(row
                            .get::<_, Option<String>>(i)
                            .map_or(Value::NullText, Value::Text)),
                        ref other => Err(DbError::Other(format!("column {i} is of type {other}"))),
                    })
                    .collect()
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let stmt = self.statement(sql)?;
        Ok(self.client.execute(&stmt, &postgres_params(params))?)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.client.batch_execute(sql)?)
    }

    fn is_postgres(&self) -> bool {
        true
    }
}
