//! One integration-test binary: every test starts its own gateway against the real
//! RabbitMQ and Redis, isolated by exchange and queue names.

mod auth;
mod broker;
mod consumers;
mod docs;
mod helpers;
mod persistence;
mod proxy;
mod publish;
mod reads;
mod validation;
