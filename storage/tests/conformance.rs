//! openraft's own storage conformance suite against the sled stores.

mod common;

use autoglm_storage::{LogStore, StateMachineStore, StoreOptions};
use common::{Kv, KvConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct SledBuilder;

impl StoreBuilder<KvConfig, LogStore<KvConfig>, StateMachineStore<KvConfig, Kv>, tempfile::TempDir>
    for SledBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<KvConfig>,
            StateMachineStore<KvConfig, Kv>,
        ),
        StorageError<u64>,
    > {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = autoglm_storage::open::<KvConfig, Kv>(dir.path(), &StoreOptions::default())
            .expect("open store");
        Ok((dir, opened.log, opened.state_machine))
    }
}

#[test]
fn openraft_suite_passes_on_sled() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}
