//! rumqttc clients for MQTT 3.1.1 and 5, sharing one trait: each runs its event loop on a task
//! that hands incoming packets over a channel, so a test reads them in order, with a timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as v5p;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for a packet.
pub const WAIT: Duration = Duration::from_secs(30);

/// Incoming packets, or the error that ended the connection.
type Incoming<P> = mpsc::Receiver<Result<P, String>>;

/// What both clients offer: the packets the server sent, one at a time.
pub trait MqttClient {
    type Packet: std::fmt::Debug;

    fn incoming(&mut self) -> &mut Incoming<Self::Packet>;

    /// The next packet from the server.
    async fn next(&mut self) -> Self::Packet {
        tokio::time::timeout(WAIT, self.incoming().recv())
            .await
            .expect("a packet in time")
            .expect("the client runs")
            .expect("no connection error")
    }

    /// The next packet `pick` takes, skipping the others.
    async fn next_where<T>(&mut self, pick: impl Fn(Self::Packet) -> Option<T>) -> T {
        loop {
            if let Some(taken) = pick(self.next().await) {
                return taken;
            }
        }
    }
}

/// An event loop of either version.
trait EventLoop: Send + 'static {
    type Packet: Send + 'static;

    /// The next incoming packet (`None` after an outgoing one), or the connection's error.
    fn incoming(&mut self) -> impl Future<Output = Option<Result<Self::Packet, String>>> + Send;
}

impl EventLoop for rumqttc::EventLoop {
    type Packet = rumqttc::Packet;

    async fn incoming(&mut self) -> Option<Result<rumqttc::Packet, String>> {
        match self.poll().await {
            Ok(rumqttc::Event::Incoming(packet)) => Some(Ok(packet)),
            Ok(rumqttc::Event::Outgoing(_)) => None,
            Err(error) => Some(Err(error.to_string())),
        }
    }
}

impl EventLoop for rumqttc::v5::EventLoop {
    type Packet = v5p::Packet;

    async fn incoming(&mut self) -> Option<Result<v5p::Packet, String>> {
        match self.poll().await {
            Ok(rumqttc::v5::Event::Incoming(packet)) => Some(Ok(packet)),
            Ok(rumqttc::v5::Event::Outgoing(_)) => None,
            Err(error) => Some(Err(error.to_string())),
        }
    }
}

/// Polls `eventloop` on a task until the connection fails or the receiver is dropped. A channel
/// of one packet means a test that stops reading stops the client polling (and acknowledging).
fn pump<L: EventLoop>(mut eventloop: L, capacity: usize) -> (Incoming<L::Packet>, JoinHandle<()>) {
    let (sender, incoming) = mpsc::channel(capacity);
    let task = tokio::spawn(async move {
        loop {
            let Some(event) = eventloop.incoming().await else {
                continue;
            };
            let failed = event.is_err();
            if sender.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    (incoming, task)
}

/// An MQTT 3.1.1 client that holds one incoming packet at a time.
pub struct Client311 {
    pub client: rumqttc::AsyncClient,
    incoming: Incoming<rumqttc::Packet>,
    pub task: JoinHandle<()>,
    /// What the CONNACK said.
    pub session_present: bool,
}

impl MqttClient for Client311 {
    type Packet = rumqttc::Packet;

    fn incoming(&mut self) -> &mut Incoming<rumqttc::Packet> {
        &mut self.incoming
    }
}

impl Client311 {
    pub async fn connect(server: SocketAddr, id: &str) -> Client311 {
        Client311::connect_with(server, id, |_| {}).await
    }

    pub async fn connect_with(
        server: SocketAddr,
        id: &str,
        configure: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> Client311 {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", server.port());
        options.set_keep_alive(Duration::from_secs(30));
        configure(&mut options);
        let (client, eventloop) = rumqttc::AsyncClient::new(options, 64);
        let (incoming, task) = pump(eventloop, 1);
        let mut connected = Client311 {
            client,
            incoming,
            task,
            session_present: false,
        };
        match connected.next().await {
            rumqttc::Packet::ConnAck(ack) => {
                assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
                connected.session_present = ack.session_present;
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        connected
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        self.next_where(|packet| match packet {
            rumqttc::Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str) -> rumqttc::SubscribeReasonCode {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.next_where(|packet| match packet {
            rumqttc::Packet::SubAck(ack) => Some(ack.return_codes[0]),
            _ => None,
        })
        .await
    }

    /// Disconnects cleanly: the DISCONNECT is sent before this returns.
    pub async fn leave(mut self) {
        self.client.disconnect().await.expect("disconnect");
        // The event loop stops with an error once the DISCONNECT is out.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.incoming.recv().await {}
        })
        .await;
        self.task.abort();
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .expect("publish");
        self.next_where(|packet| matches!(packet, rumqttc::Packet::PubAck(_)).then_some(()))
            .await;
    }
}

/// An MQTT 5 client.
pub struct Client5 {
    pub client: rumqttc::v5::AsyncClient,
    incoming: Incoming<v5p::Packet>,
    pub task: JoinHandle<()>,
    /// What the CONNACK said.
    pub connack: v5p::ConnAck,
}

impl MqttClient for Client5 {
    type Packet = v5p::Packet;

    fn incoming(&mut self) -> &mut Incoming<v5p::Packet> {
        &mut self.incoming
    }
}

impl Client5 {
    pub async fn connect(server: SocketAddr, id: &str) -> Client5 {
        Client5::connect_with(server, id, |_| {}).await
    }

    pub async fn connect_with(
        server: SocketAddr,
        id: &str,
        configure: impl FnOnce(&mut rumqttc::v5::MqttOptions),
    ) -> Client5 {
        let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", server.port());
        options.set_keep_alive(Duration::from_secs(30));
        configure(&mut options);
        let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
        let (mut incoming, task) = pump(eventloop, 16);
        let first = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .expect("a CONNACK in time")
            .expect("the client runs")
            .expect("no connection error");
        let connack = match first {
            v5p::Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        assert_eq!(connack.code, v5p::ConnectReturnCode::Success);
        Client5 {
            client,
            incoming,
            task,
            connack,
        }
    }

    pub async fn next_publish(&mut self) -> v5p::Publish {
        self.next_where(|packet| match packet {
            v5p::Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    /// Publishes at QoS 1 and returns the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) -> v5p::PubAck {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain,
                payload.to_vec(),
            )
            .await
            .expect("publish");
        self.next_where(|packet| match packet {
            v5p::Packet::PubAck(ack) => Some(ack),
            _ => None,
        })
        .await
    }

    pub async fn subscribe(&mut self, filter: &str) -> v5p::SubAck {
        self.client
            .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.next_where(|packet| match packet {
            v5p::Packet::SubAck(ack) => Some(ack),
            _ => None,
        })
        .await
    }
}
