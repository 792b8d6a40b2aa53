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
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
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
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.execute_batch(sql)?)
    }

    fn is_postgres(&self) -> bool {
        false
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::NullInt | Value::NullText => ValueRef::Null,
        }))
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

/// The most rows one `INSERT` of [`insert_rows`] carries. Statements are made of 128, 64, …, 1
/// rows, so that each database prepares a handful of texts once, and a chunk of claims costs a
/// few dozen round trips to PostgreSQL instead of one per row.
const ROWS_PER_INSERT: usize = 128;

thread_local! {
    /// `($1, $2), ($3, $4)` for each (rows, width) made: writing them out anew for every
    /// statement was a tenth of a chunk's commit.
    static PLACEHOLDERS: std::cell::RefCell<std::collections::HashMap<(usize, usize), std::rc::Rc<str>>> =
        Default::default();
}

fn placeholders(rows: usize, width: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=width)
                .map(|col| format!("${}", row * width + col))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    values.join(", ")
}

/// Inserts `rows` (each of the same width) with multi-row `INSERT`s: `insert` is the statement
/// up to `VALUES`, and `tail` what follows the values (an `ON CONFLICT` clause, or nothing).
/// With an `ON CONFLICT … DO UPDATE`, no two rows may share a key.
pub fn insert_rows(
    conn: &mut dyn Backend,
    insert: &str,
    tail: &str,
    rows: Vec<Vec<Value>>,
) -> Result<(), DbError> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(());
    };
    let mut left = rows.len();
    let mut rows = rows.into_iter();
    while left > 0 {
        let count = if left >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << left.ilog2()
        };
        let params: Vec<Value> = rows.by_ref().take(count).flatten().collect();
        if params.len() != count * width {
            return Err(DbError::Other(format!(
                "rows of different widths for {insert}"
            )));
        }
        let values = PLACEHOLDERS.with(|cache| {
            std::rc::Rc::clone(
                cache
                    .borrow_mut()
                    .entry((count, width))
                    .or_insert_with(|| placeholders(count, width).into()),
            )
        });
        conn.execute(&format!("{insert} VALUES {values} {tail}"), &params)?;
        left -= count;
    }
    Ok(())
}

/// The most keys one `IN (…)` list of [`query_in`] and [`execute_in`] carries.
const KEYS_PER_LIST: usize = 256;

/// `keys` in lists of at most [`KEYS_PER_LIST`], each padded to a power of two by repeating its
/// last key (a key twice in `IN` changes nothing), so that few statement texts are prepared:
/// each list's `$1, $2, …` and its parameters.
fn key_lists<'a>(keys: &'a [&'a str]) -> impl Iterator<Item = (String, Vec<Value>)> + 'a {
    keys.chunks(KEYS_PER_LIST).map(|list| {
        let padded = list.len().next_power_of_two();
        let placeholders: Vec<String> = (1..=padded).map(|i| format!("${i}")).collect();
        let params = (0..padded)
            .map(|i| Value::from(list[i.min(list.len() - 1)]))
            .collect();
        (placeholders.join(", "), params)
    })
}

/// Every row of `sql`, whose `{keys}` stands for a list of parameters, over all of `keys`: a
/// query per few hundred keys instead of one per key.
pub fn query_in(
    conn: &mut dyn Backend,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<Vec<Value>>, DbError> {
    let mut rows = Vec::new();
    for (list, params) in key_lists(keys) {
        rows.extend(conn.query(&sql.replace("{keys}", &list), &params)?);
    }
    Ok(rows)
}

/// Runs `sql`, whose `{keys}` stands for a list of parameters, over all of `keys`.
pub fn execute_in(conn: &mut dyn Backend, sql: &str, keys: &[&str]) -> Result<(), DbError> {
    for (list, params) in key_lists(keys) {
        conn.execute(&sql.replace("{keys}", &list), &params)?;
    }
    Ok(())
}
