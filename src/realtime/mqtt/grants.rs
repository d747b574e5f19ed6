//! Subscription grants: the topic filters a connection holds, each at a QoS and with its MQTT 5
//! options, and which of them a delivery matches.

use std::sync::Arc;

use rumqttd::protocol::{Filter as Requested, QoS, RetainForwardRule, SubscribeReasonCode};

use super::broker::Chosen;
use crate::realtime::TopicFilter;

/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// One granted subscription.
#[derive(Clone)]
pub struct Grant {
    /// The topics it covers.
    pub filter: TopicFilter,
    /// The QoS granted: deliveries go at the lower of this and their own.
    pub qos: QoS,
    /// MQTT 5 No Local: the connection's own plain-topic messages are not delivered back.
    pub no_local: bool,
    /// MQTT 5 Retain As Published: deliveries keep the retain flag they were published with.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier: sent with every delivery the subscription matches.
    pub id: Option<usize>,
    /// For a shared subscription, its whole name (`$share/<group>/<filter>`), which every
    /// member of the group holds: each message goes to one of them.
    pub share: Option<Arc<str>>,
}

impl Grant {
    fn is(&self, filter: &TopicFilter, share: Option<&str>) -> bool {
        self.filter == *filter && self.share.as_deref() == share
    }

    /// Whether a plain-topic message on `topic` goes to `client` by this grant: a shared one
    /// if the broker chose `client` among its group's members.
    pub fn takes(&self, topic: &str, chosen: &[Chosen], client: &str) -> bool {
        match &self.share {
            None => self.filter.matches(topic),
            Some(share) => chosen
                .iter()
                .any(|c| c.share == *share && *c.client == *client),
        }
    }

    /// Whether a table's record goes to this grant's holder: shared subscriptions are for
    /// plain topics.
    pub fn takes_record(&self, table: &str, id: &crate::storage::Key) -> bool {
        self.share.is_none() && self.filter.matches_record(table, id)
    }

    /// The subscription's name, as the client gave it.
    pub fn name(&self) -> String {
        match &self.share {
            Some(share) => share.to_string(),
            None => self.filter.to_string(),
        }
    }
}

/// A subscription as named: its filter, and its whole name if it is shared.
pub type Named = (TopicFilter, Option<Arc<str>>);

/// Reads a subscription's name: a topic filter, or `$share/<group>/<filter>` for a shared
/// subscription (with its whole name).
pub fn parse(path: &str) -> Result<Named, String> {
    let Some(shared) = path.strip_prefix("$share/") else {
        return Ok((TopicFilter::parse(path)?, None));
    };
    let Some((group, filter)) = shared.split_once('/') else {
        return Err("a shared subscription is `$share/<group>/<filter>`".to_owned());
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(format!(
            "`{group}`: a share group is a name without wildcards (MQTT-4.8.2-2)"
        ));
    }
    Ok((TopicFilter::parse(filter)?, Some(Arc::from(path))))
}

/// What the grants that match a delivery give it: one copy, at the highest QoS among them,
/// keeping its retain flag if any of them asks to, with the identifiers of all of them
/// (MQTT-3.3.4-4).
#[derive(Debug, PartialEq, Eq)]
pub struct Granted {
    pub qos: QoS,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<usize>,
}

/// The grants of one connection, at most one per filter.
#[derive(Default)]
pub struct Grants {
    grants: Vec<Grant>,
}

impl Grants {
    /// Checks a requested subscription: its syntax and the limit of subscriptions per
    /// connection. Returns its filter, and its name if it is shared.
    pub fn check(&self, path: &str) -> Result<Named, (SubscribeReasonCode, String)> {
        let (filter, share) =
            parse(path).map_err(|reason| (SubscribeReasonCode::TopicFilterInvalid, reason))?;
        if !self.holds(&filter, share.as_deref()) && self.grants.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                SubscribeReasonCode::QuotaExceeded,
                format!("a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions"),
            ));
        }
        Ok((filter, share))
    }

    /// Whether a grant for `filter`, shared as `share` or not, is held.
    pub fn holds(&self, filter: &TopicFilter, share: Option<&str>) -> bool {
        self.grants.iter().any(|g| g.is(filter, share))
    }

    /// Grants what `request` asks for `filter` (already checked), replacing a grant for the same
    /// filter. Returns the QoS granted, and whether the current values are to be sent (MQTT 5's
    /// Retain Handling; always under 3.1.1).
    pub fn grant(
        &mut self,
        (filter, share): Named,
        (request, id): (&Requested, Option<usize>),
        v5: bool,
    ) -> (QoS, bool) {
        let qos = request.qos;
        let send_current = match request.retain_forward_rule {
            // Retained messages are not sent for shared subscriptions (MQTT 5, 4.8.2).
            _ if share.is_some() => false,
            RetainForwardRule::OnEverySubscribe => true,
            RetainForwardRule::OnNewSubscribe => !self.holds(&filter, share.as_deref()),
            RetainForwardRule::Never => false,
        };
        self.remove(&filter, share.as_deref());
        self.grants.push(Grant {
            filter,
            qos,
            no_local: v5 && request.nolocal,
            retain_as_published: v5 && request.preserve_retain,
            id,
            share,
        });
        (qos, send_current)
    }

    /// Holds `grant` again (a persistent session's, on reconnect).
    pub fn restore(&mut self, grant: Grant) {
        self.remove(&grant.filter, grant.share.as_deref());
        self.grants.push(grant);
    }

    /// The grants held.
    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }

    /// Removes the grant for `filter`, shared as `share` or not; false if there was none.
    pub fn remove(&mut self, filter: &TopicFilter, share: Option<&str>) -> bool {
        let before = self.grants.len();
        self.grants.retain(|g| !g.is(filter, share));
        self.grants.len() < before
    }

    /// What the grants that pass `matches` give a delivery, if any does.
    pub fn best(&self, matches: impl Fn(&Grant) -> bool) -> Option<Granted> {
        self.grants
            .iter()
            .filter(|g| matches(g))
            .fold(None, |best: Option<Granted>, g| {
                let mut best = best.unwrap_or(Granted {
                    qos: g.qos,
                    retain_as_published: false,
                    subscription_ids: Vec::new(),
                });
                best.qos = higher(best.qos, g.qos);
                best.retain_as_published |= g.retain_as_published;
                best.subscription_ids.extend(g.id);
                Some(best)
            })
    }

    /// How many grants are held.
    pub fn len(&self) -> usize {
        self.grants.len()
    }
}

/// The lower of two QoS levels.
pub fn lower(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

pub fn higher(a: QoS, b: QoS) -> QoS {
    if a < b { b } else { a }
}
