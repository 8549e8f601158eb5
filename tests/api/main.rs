//! One integration-test binary: every test starts its own gateway against the real
//! RabbitMQ and Redis, isolated by exchange and queue names.

mod asyncapi;
mod auth;
mod broker;
mod browser;
mod cli;
mod cloudevents;
mod compose;
mod conformance;
mod consumers;
mod cors;
mod docs;
mod helpers;
mod identity_provider;
mod ids;
mod jwks;
mod limits;
mod operations;
mod outcomes;
mod persistence;
mod proxy;
mod publish;
mod rate_limits;
mod reads;
mod reconnect;
mod refusals;
mod retry_schedule;
mod returns;
mod scheduled;
mod schemas;
mod sealing;
mod secret_settings;
mod token_holes;
mod tracing;
mod validation;
mod webhooks;
