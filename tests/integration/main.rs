//! Integration tests: real servers on port 0 with temporary data directories, driven over HTTP.

mod access;
mod access_realtime;
mod browser;
mod cache;
mod cache_active;
mod cli;
mod common;
mod disk_use;
mod durability;
mod events;
mod flows;
mod hostile;
mod limits;
mod mqtt;
mod mqtt_client;
mod mqtt_hostile;
mod mqtt_raw;
mod origin;
mod queries;
mod query_model;
mod rest;
mod rest_scenarios;
mod storage_failure;
mod store_model;
mod subscribe;
mod tls;
