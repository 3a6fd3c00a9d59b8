//! Why a balanced channel could not be made.

/// The backend URL cannot be balanced over.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// Not an `http://host:port` URL.
    #[error("backend url `{url}` is invalid: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resolved address could not be turned into an endpoint.
    #[error("cannot build an endpoint for `{address}`: {source}")]
    Endpoint {
        /// The resolved address.
        address: std::net::SocketAddr,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
}
