//! Subscription grants: the topic filters a connection holds, each at a QoS and with its MQTT 5
//! options, and which of them a delivery matches.

use rumqttd::protocol::{Filter as Requested, QoS, RetainForwardRule, SubscribeReasonCode};

use crate::realtime::TopicFilter;

/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// One granted subscription.
pub struct Grant {
    /// The topics it covers.
    pub filter: TopicFilter,
    /// The QoS granted: deliveries go at the lower of this and their own.
    pub qos: QoS,
    /// MQTT 5 No Local: the connection's own plain-topic messages are not delivered back.
    pub no_local: bool,
    /// MQTT 5 Retain As Published: deliveries keep the retain flag they were published with.
    pub retain_as_published: bool,
}

/// The grants of one connection, at most one per filter.
#[derive(Default)]
pub struct Grants {
    grants: Vec<Grant>,
}

impl Grants {
    /// Checks a requested filter: its syntax and the limit of subscriptions per connection.
    pub fn check(&self, path: &str) -> Result<TopicFilter, (SubscribeReasonCode, String)> {
        if path.starts_with("$share/") {
            return Err((
                SubscribeReasonCode::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported".to_owned(),
            ));
        }
        let filter = TopicFilter::parse(path)
            .map_err(|reason| (SubscribeReasonCode::TopicFilterInvalid, reason))?;
        if !self.holds(&filter) && self.grants.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                SubscribeReasonCode::QuotaExceeded,
                format!("a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions"),
            ));
        }
        Ok(filter)
    }

    /// Whether a grant for `filter` is held.
    pub fn holds(&self, filter: &TopicFilter) -> bool {
        self.grants.iter().any(|g| g.filter == *filter)
    }

    /// Grants what `request` asks for `filter` (already checked), replacing a grant for the same
    /// filter. Returns the QoS granted, and whether the current values are to be sent (MQTT 5's
    /// Retain Handling; always under 3.1.1).
    pub fn grant(&mut self, filter: TopicFilter, request: &Requested, v5: bool) -> (QoS, bool) {
        let qos = request.qos;
        let send_current = match request.retain_forward_rule {
            RetainForwardRule::OnEverySubscribe => true,
            RetainForwardRule::OnNewSubscribe => !self.holds(&filter),
            RetainForwardRule::Never => false,
        };
        self.remove(&filter);
        self.grants.push(Grant {
            filter,
            qos,
            no_local: v5 && request.nolocal,
            retain_as_published: v5 && request.preserve_retain,
        });
        (qos, send_current)
    }

    /// Holds `grant` again (a persistent session's, on reconnect).
    pub fn restore(&mut self, grant: Grant) {
        self.remove(&grant.filter);
        self.grants.push(grant);
    }

    /// The grants held.
    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }

    /// Removes the grant for `filter`; false if there was none.
    pub fn remove(&mut self, filter: &TopicFilter) -> bool {
        let before = self.grants.len();
        self.grants.retain(|g| g.filter != *filter);
        self.grants.len() < before
    }

    /// The highest QoS granted by the grants that pass `matches`, and whether any of them keeps
    /// the retain flag as published: overlapping subscriptions get one delivery.
    pub fn best(&self, matches: impl Fn(&Grant) -> bool) -> Option<(QoS, bool)> {
        self.grants
            .iter()
            .filter(|g| matches(g))
            .fold(None, |best, g| match best {
                None => Some((g.qos, g.retain_as_published)),
                Some((qos, rap)) => Some((higher(qos, g.qos), rap || g.retain_as_published)),
            })
    }
}

/// The lower of two QoS levels.
pub fn lower(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

pub fn higher(a: QoS, b: QoS) -> QoS {
    if a < b { b } else { a }
}
