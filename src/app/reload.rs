//! What a running server reloads: the schema files and the certificate on SIGHUP, the access
//! file on SIGHUP and whenever it changes; a bad file leaves what is in force.

use std::sync::Arc;

use tokio::signal::unix::Signal;

use crate::access::Access;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::graphql;
use crate::tls::Tls;

/// How often the access file is looked at for a change.
const ACCESS_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the access file on SIGHUP and when it changes, and the schemas and the certificate on
/// SIGHUP; a bad file leaves what is in force.
pub async fn on_change(
    mut hangup: Option<Signal>,
    catalog: Arc<Catalog>,
    schemas: std::path::PathBuf,
    access: Option<(Access, std::path::PathBuf)>,
    tls: Option<Tls>,
    results: Arc<graphql::Results>,
) {
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut seen = access.as_ref().and_then(|(_, path)| modified(path));
    let mut poll = tokio::time::interval(ACCESS_POLL);
    loop {
        let asked = async {
            match &mut hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        let hung_up = tokio::select! {
            _ = asked => true,
            _ = poll.tick() => false,
        };
        // Schemas first: an access rule may name a property the same reload adds.
        if hung_up {
            reload_schemas(&catalog, &schemas).await;
        }
        if let Some((access, path)) = &access {
            let now = modified(path);
            if hung_up || now != seen {
                seen = now;
                if reload_access(access, path) {
                    // Kept answers showed what the old rules let their askers see.
                    results.clear();
                }
            }
        }
        if let Some(tls) = tls.as_ref().filter(|_| hung_up) {
            match tls.reload() {
                Ok(()) => tracing::info!("certificate reloaded"),
                Err(reason) => tracing::error!(
                    "the certificate was not reloaded, the one in use stays: {reason}"
                ),
            }
        }
    }
}

/// Reloads the schema files (see [`Catalog::reload_schemas`]) and logs what came of it.
async fn reload_schemas(catalog: &Arc<Catalog>, dir: &std::path::Path) {
    let (catalog, dir) = (catalog.clone(), dir.to_owned());
    let reloaded = tokio::task::spawn_blocking(move || {
        let now = Clock::system().now_ms();
        catalog.reload_schemas(&dir, now)
    })
    .await;
    match reloaded {
        Ok(Ok(changed)) if changed.is_empty() => tracing::info!("schemas reloaded: none changed"),
        Ok(Ok(changed)) => {
            let tables: Vec<&str> = changed.iter().map(|name| &**name).collect();
            tracing::info!(?tables, "schemas reloaded");
        }
        Ok(Err(refusals)) => {
            for refusal in &refusals {
                tracing::error!("{refusal}");
            }
            tracing::error!("the schemas were not reloaded: every table keeps the schema it has");
        }
        Err(error) => tracing::error!(%error, "the schema reload failed"),
    }
}

/// Reloads the access file; whether the rules changed.
fn reload_access(access: &Access, path: &std::path::Path) -> bool {
    match access.reload() {
        Ok(()) => {
            tracing::info!(file = %path.display(), "access rules reloaded");
            true
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            tracing::error!(file = %path.display(), "the access file was not reloaded: the rules in force stay");
            false
        }
    }
}
