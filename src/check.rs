//! `tablecast check`: whether a schema directory can serve a data directory, before a deploy.
//!
//! It reports what a start would refuse (bad schema files, a changed key type) and, unlike a
//! start, checks every stored record of every table against its schema, whether the schema
//! changed or not. The data directory must not be in use by a running server.

use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::DEFAULT_MAX_BODY;
use crate::error::{Chain, Error};
use crate::schema::{self, LoadError, TableSchema};
use crate::storage::{self, Store};

/// What to check.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory of table schemas: one JSON Schema file per table, `<Table>.json`.
    #[arg(long, env = "TABLECAST_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,
    /// A database directory whose records the schemas must accept (a stopped server's, or a
    /// copy); without it, only the schema files are checked.
    #[arg(long)]
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
    if !data.is_dir() {
        return Err(format!("{} is not a database directory", data.display()));
    }
    let store = std::sync::Arc::new(open_store(data)?);
    let changed = key_types_kept(&schemas, &store).map_err(|e| Chain(&e).to_string())?;
    if !changed.is_empty() {
        print_problems(&changed);
        return Ok(false);
    }
    let clock = Clock::system();
    let catalog = Catalog::open(schemas, &store, &clock, DEFAULT_MAX_BODY)
        .map_err(|e| Chain(&e).to_string())?;
    let mut valid = true;
    for resource in catalog.resources() {
        let table = resource.table();
        let report = table
            .check_records(clock.now_ms())
            .map_err(|e| Chain(&e).to_string())?;
        if report.breaking == 0 {
            println!("{}: {} records, all valid", table.name(), report.records);
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

/// A problem for each schema that declares another key type than its table's stored records
/// have: the records cannot be read under it.
pub fn key_types_kept(schemas: &[TableSchema], store: &Store) -> Result<Vec<LoadError>, Error> {
    let mut problems = Vec::new();
    for schema in schemas {
        let declared = schema.settings.key_type;
        let Some((stored, records)) = store.stored_key_type(&schema.name)? else {
            continue;
        };
        if stored != declared && records > 0 {
            problems.push(LoadError {
                file: schema.file.clone(),
                pointer: format!(
                    "/properties/{}/type",
                    schema::settings::escape_pointer(&schema.settings.primary_key)
                ),
                reason: format!(
                    "table `{}` holds {records} records with {} keys, which this {} key cannot read; put the type back, or serve this schema on a new --data directory and load the records again",
                    schema.name,
                    stored.name(),
                    declared.name()
                ),
            });
        }
    }
    Ok(problems)
}
