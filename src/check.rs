//! `tablecast check`: whether a schema directory can serve a data directory, before a deploy.
//!
//! It reports what a start would refuse (bad schema files, a changed key type) and, unlike a
//! start, checks every stored record of every table against its schema, whether the schema
//! changed or not. It writes nothing: no index is built or dropped, no check remembered. The
//! data directory must not be in use by a running server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog;
use crate::clock::Clock;
use crate::error::Chain;
use crate::schema::{self, LoadError};
use crate::storage::{self, Store};
use crate::table::Table;

/// What to check.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory of table schemas: one JSON Schema file per table, `<Table>.json`.
    #[arg(long, env = "TABLECAST_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// A database directory whose records the schemas must accept (a stopped server's, or a
    /// copy); without it, only the schema files are checked.
    #[arg(long, env = "TABLECAST_DATA")]
    pub data: Option<PathBuf>,
}

/// Prints what is wrong on standard output; `Ok(true)` when nothing is.
pub fn run(args: &CheckArgs) -> Result<bool, String> {
    let schemas = match schema::load_dir(&args.schemas) {
        Ok(schemas) => schemas,
        Err(problems) => {
            print_problems(&problems);
            return Ok(false);
        }
    };
    let files = match schemas.len() {
        1 => "1 schema file".to_owned(),
        n => format!("{n} schema files"),
    };
    println!("{}: {files}, all valid", args.schemas.display());
    let Some(data) = &args.data else {
        return Ok(true);
    };
    // sled's own file: without it, opening would make a new database rather than check one.
    if !data.join("db").is_file() {
        return Err(format!("{} holds no tablecast database", data.display()));
    }
    let store = Arc::new(open_store(data)?);
    let changed = catalog::key_types_kept(&schemas, &store).map_err(|e| Chain(&e).to_string())?;
    if !changed.is_empty() {
        print_problems(&changed);
        return Ok(false);
    }
    let now = Clock::system().now_ms();
    let mut valid = true;
    for schema in schemas {
        let name = schema.name.clone();
        let Some(table) =
            Table::open_to_read(schema, store.clone()).map_err(|e| Chain(&e).to_string())?
        else {
            println!("{name}: no records yet");
            continue;
        };
        let report = table
            .check_records(now)
            .map_err(|e| Chain(&e).to_string())?;
        if report.breaking == 0 {
            let records = match report.records {
                1 => "1 record".to_owned(),
                n => format!("{n} records"),
            };
            println!("{}: {records}, all valid", table.name());
            continue;
        }
        valid = false;
        println!(
            "{}: {} of {} records break the schema ({}), first:",
            table.name(),
            report.breaking,
            report.records,
            table.schema().file.display()
        );
        report
            .lines(table.name())
            .for_each(|line| println!("  {line}"));
    }
    Ok(valid)
}

fn print_problems(problems: &[LoadError]) {
    for problem in problems {
        println!("{problem}");
    }
}

fn open_store(data: &Path) -> Result<Store, String> {
    Store::open(data, storage::Options::default(), Box::new(|_| {})).map_err(|error| {
        format!(
            "cannot open the database in {}: {}; stop the server that uses it, or check a copy",
            data.display(),
            Chain(&error)
        )
    })
}
