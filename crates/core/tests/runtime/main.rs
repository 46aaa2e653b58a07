//! Integration tests of the Docker sandbox runtime against the real engine.
//! Each test asserts from inside a sandbox. Needs the test image
//! (images/sandbox-test/build.sh) and a Docker engine: without them every test
//! fails with a message saying so.

/// Runs each listed `async fn name(runtime: &str)` twice: as `runc::name` and
/// as `runsc::name` (gVisor). Under runsc a test fails, with instructions,
/// if the engine has no runsc runtime.
macro_rules! under_both_runtimes {
    ($($name:ident),+ $(,)?) => {
        mod runc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("runc").await
                }
            )+
        }
        mod runsc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("runsc").await
                }
            )+
        }
    };
}

mod agent_volume;
mod channel;
mod helpers;
mod isolation;
mod lifecycle;
mod limits;
