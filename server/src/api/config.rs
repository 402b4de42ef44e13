//! `autoglm.v1.ConfigService`: the versioned runtime configuration store.

use std::sync::Arc;

use autoglm_client::proto::config_service_server::ConfigService;
use autoglm_client::proto::{
    ConfigCasRequest, ConfigCasResponse, ConfigEntry, ConfigGetRequest, ConfigGetResponse,
    ConfigPutRequest, ConfigPutResponse,
};
use tonic::{Request, Response, Status};

use super::{replica_status, request_id};
use crate::replica::Replica;
use crate::scheduler::config_store::{self, ConfigEntry as StoredEntry};
use crate::scheduler::requests::RequestId;
use crate::scheduler::settings;
use crate::scheduler::{Command, Response as Applied};

pub struct ConfigApi {
    replica: Arc<Replica>,
}

impl ConfigApi {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    async fn write(
        &self,
        key: String,
        value: String,
        expected_version: Option<u64>,
        request: RequestId,
    ) -> Result<Applied, Status> {
        config_store::validate(&key, Some(&value)).map_err(Status::invalid_argument)?;
        settings::check(&key, &value).map_err(Status::invalid_argument)?;
        if key == settings::ENTRY_FORMAT.key {
            // Checked above: a whole number within the setting's range.
            let version = value.parse::<u16>().unwrap_or(u16::MAX);
            self.replica
                .members_read_entry_format(version)
                .await
                .map_err(|e| Status::failed_precondition(format!("value: {e}")))?;
        }
        let command = Command::SetConfig {
            key,
            value,
            expected_version,
        };
        let applied = self
            .replica
            .propose(command, Some(request))
            .await
            .map_err(replica_status)?;
        match applied {
            Applied::Rejected(reason) => Err(Status::invalid_argument(reason)),
            other => Ok(other),
        }
    }
}

fn to_proto(e: StoredEntry) -> ConfigEntry {
    ConfigEntry {
        key: e.key,
        value: e.value,
        version: e.version,
        mod_index: e.mod_index,
    }
}

fn unexpected(r: Applied) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn get(
        &self,
        request: Request<ConfigGetRequest>,
    ) -> Result<Response<ConfigGetResponse>, Status> {
        let req = request.into_inner();
        config_store::validate(&req.key, None).map_err(Status::invalid_argument)?;
        self.replica
            .read_barrier(req.stale)
            .await
            .map_err(replica_status)?;
        let applied = self.replica.state.read();
        Ok(Response::new(ConfigGetResponse {
            entry: applied.state.config.get(&req.key).cloned().map(to_proto),
            read_index: applied.last_applied.map_or(0, |id| id.index),
        }))
    }

    async fn put(
        &self,
        request: Request<ConfigPutRequest>,
    ) -> Result<Response<ConfigPutResponse>, Status> {
        let id = request_id(&request)?;
        let req = request.into_inner();
        match self.write(req.key, req.value, None, id).await? {
            Applied::ConfigWritten(e) => Ok(Response::new(ConfigPutResponse {
                entry: Some(to_proto(e)),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn compare_and_set(
        &self,
        request: Request<ConfigCasRequest>,
    ) -> Result<Response<ConfigCasResponse>, Status> {
        let id = request_id(&request)?;
        let req = request.into_inner();
        let response = match self
            .write(req.key, req.value, Some(req.expected_version), id)
            .await?
        {
            Applied::ConfigWritten(e) => ConfigCasResponse {
                succeeded: true,
                entry: Some(to_proto(e)),
            },
            Applied::ConfigVersionMismatch(current) => ConfigCasResponse {
                succeeded: false,
                entry: current.map(to_proto),
            },
            other => return Err(unexpected(other)),
        };
        Ok(Response::new(response))
    }
}
