//! Integration tests of the Docker sandbox runtime against the real engine.
//! Each test asserts from inside a sandbox. Needs the test image
//! (images/sandbox-test/build.sh) and a Docker engine: without them every test
//! fails with a message saying so.

mod channel;
mod helpers;
mod isolation;
mod lifecycle;
mod limits;
