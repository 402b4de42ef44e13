use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint '{endpoint}': {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("credentials: {0}")]
    InvalidCredentials(String),
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("{}", .0.message())]
    Rpc(tonic::Status),
    #[error("no replica answered within {waited_ms} ms (last error: {})", .last.message())]
    Unavailable { waited_ms: u64, last: tonic::Status },
    /// A file the client writes (a backup) could not be written or did not
    /// arrive whole.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl ClientError {
    /// The gRPC code behind the error, if it came from a server.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc(s) | ClientError::Unavailable { last: s, .. } => Some(s.code()),
            _ => None,
        }
    }
}
