//! A session's SUBSCRIBE and UNSUBSCRIBE: grants, what they start sending, and their answers.

use rumqttd::protocol::{
    Packet, SubAck, SubAckProperties, Subscribe, SubscribeProperties, SubscribeReasonCode,
    UnsubAck, UnsubAckReason, Unsubscribe,
};

use super::Session;
use crate::realtime::TopicFilter;
use crate::realtime::mqtt::codec::Version;
use crate::realtime::mqtt::grants::{self, lower};
use crate::realtime::mqtt::outbox::{Delivery, MAX_QUEUED, Origin};
use crate::realtime::mqtt::sys::Stats;

impl Session {
    /// Grants what a SUBSCRIBE asks that may be granted, starts sending current values and
    /// retained messages where asked, and answers with a SUBACK.
    pub(super) fn subscribe(
        &mut self,
        subscribe: Subscribe,
        properties: Option<SubscribeProperties>,
    ) {
        let v5 = self.codec.version() == Version::V5;
        let id = properties.and_then(|p| p.id);
        let catalog = self.shared.realtime.catalog().clone();
        // Listening before retained messages are read: none published meanwhile is missed.
        if self.messages.is_none() {
            self.messages = Some(self.shared.broker.listen());
        }
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut refusals = Vec::new();
        for request in subscribe.filters {
            let checked = self
                .grants
                .check(&request.path)
                .and_then(|(filter, share)| Ok((self.permitted(filter, v5)?, share)))
                .and_then(|(filter, share)| {
                    let names_table = filter.first().is_some_and(|f| catalog.resource(f).is_ok());
                    if share.is_some() && names_table {
                        return Err((
                            SubscribeReasonCode::SharedSubscriptionsNotSupported,
                            "shared subscriptions are for plain topics: every subscriber of a \
                             table gets each of its changes"
                                .to_owned(),
                        ));
                    }
                    Ok((filter, share))
                });
            let code = match checked {
                Ok((filter, share)) => {
                    if !self.grants.holds(&filter, share.as_deref()) {
                        Stats::count(&self.shared.stats.subscriptions);
                    }
                    let shared = share.is_some();
                    let (qos, send_current) =
                        self.grants
                            .grant((filter.clone(), share.clone()), (&request, id), v5);
                    if shared {
                        if let Some(grant) = self.grants.iter().find(|g| g.share == share) {
                            self.shared.broker.join(grant, &self.client_id);
                        }
                    } else if catalog
                        .resources()
                        .any(|r| filter.may_match_table(r.table().name()))
                    {
                        if send_current {
                            self.subscription.watch(filter.clone());
                        } else {
                            self.subscription.watch_changes(filter.clone());
                        }
                    }
                    if send_current {
                        for retained in self.shared.broker.retained(&filter) {
                            // At the lower of its QoS and the grant's; not kept by the session,
                            // so at QoS 1 at most, as table records.
                            let delivery = Delivery {
                                qos: self.table_qos(lower(retained.qos, qos)),
                                subscription_ids: id.into_iter().collect(),
                                ..retained
                            };
                            if !self.outbox.queue(delivery, Origin::Passing) {
                                tracing::warn!(client = %self.client_id, "an MQTT client has {MAX_QUEUED} deliveries waiting; retained messages of `{filter}` were not sent");
                                break;
                            }
                        }
                    }
                    SubscribeReasonCode::Success(qos)
                }
                Err((code, detail)) => {
                    tracing::warn!(client = %self.client_id, filter = request.path, "refused an MQTT subscription: {detail}");
                    refusals.push(format!("{}: {detail}", request.path));
                    if v5 {
                        code
                    } else {
                        SubscribeReasonCode::Failure
                    }
                }
            };
            codes.push(code);
        }
        self.save();
        self.listen_if_subscribed();
        let properties = (v5 && !refusals.is_empty()).then(|| SubAckProperties {
            reason_string: Some(refusals.join("; ")),
            user_properties: Vec::new(),
        });
        self.outbox.send(Packet::SubAck(
            SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
            },
            properties,
        ));
    }

    /// `filter`, if the client's identity may subscribe to it: a table's topics need read access
    /// to the table (the records delivered are then those it may read); any other filter, one
    /// of the role's plain MQTT topics.
    pub(super) fn permitted(
        &self,
        filter: TopicFilter,
        v5: bool,
    ) -> Result<TopicFilter, (SubscribeReasonCode, String)> {
        let catalog = self.shared.realtime.catalog();
        let allowed = match filter.first().map(|first| (first, catalog.resource(first))) {
            Some((_, Ok(resource))) => !self.identity.reader(resource.table()).nothing(),
            _ if filter.to_string() == super::RESYNC_TOPIC => true,
            _ if filter.to_string() == self.errors_topic() => true,
            first => {
                if let Some((first, _)) = first {
                    self.shared.typos.check(catalog, first, &self.client_id);
                }
                self.identity.may_subscribe(&filter.to_string())
            }
        };
        if allowed {
            return Ok(filter);
        }
        let code = if v5 {
            SubscribeReasonCode::NotAuthorized
        } else {
            SubscribeReasonCode::Failure
        };
        Err((
            code,
            self.identity
                .refusal(format!("subscribe to `{filter}`"))
                .to_string(),
        ))
    }

    /// Removes the filters an UNSUBSCRIBE names and answers with an UNSUBACK.
    pub(super) fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|path| {
                let Ok((filter, share)) = grants::parse(path) else {
                    return UnsubAckReason::TopicFilterInvalid;
                };
                let removed = self.grants.remove(&filter, share.as_deref());
                match share {
                    Some(share) => self.shared.broker.quit(Some(&share), &self.client_id),
                    None => self.subscription.unwatch(&filter),
                }
                if removed {
                    let subscriptions = &self.shared.stats.subscriptions;
                    subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.save();
        self.listen_if_subscribed();
        self.outbox.send(Packet::UnsubAck(
            UnsubAck {
                pkid: unsubscribe.pkid,
                reasons,
            },
            None,
        ));
    }
}
