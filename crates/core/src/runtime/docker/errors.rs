//! How engine answers map onto [`RuntimeError`].

use bollard::errors::Error as BollardError;

use crate::runtime::RuntimeError;

pub(crate) fn is_status(err: &BollardError, status: u16) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Engine 5xx and transport failures mean "unavailable"; other answers are refusals.
pub(crate) fn engine_error(err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError { status_code, message } if status_code < 500 => {
            RuntimeError::Engine(format!("{status_code}: {message}").into())
        }
        other => RuntimeError::EngineUnavailable(other.into()),
    }
}
