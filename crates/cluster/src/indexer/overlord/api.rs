//! Druid's task API as the overlord answers it: submitting and shutting down tasks.

use serde_json::Value;

use super::{Overlord, SHUTDOWN_MESSAGE, check_task_id, task_spec};
use crate::error::{Error, Result};
use crate::indexer::SUB_TASK_TYPE;
use crate::task_status::{self, TaskRecord, TaskState, new_task_id};

impl Overlord {
    /// `POST /druid/indexer/v1/task`: checks and stores the task; returns its id.
    pub async fn submit(&self, mut payload: Value) -> Result<String> {
        let guard = self.guard()?;
        let Some(object) = payload.as_object_mut() else {
            return Err(Error::Invalid("a task must be a JSON object".into()));
        };
        let task_type = match object.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(Error::Invalid("task.type must be a string".into())),
            None => return Err(Error::Invalid("task.type is missing".into())),
        };
        if task_type == SUB_TASK_TYPE {
            return Err(Error::Invalid(format!(
                "{SUB_TASK_TYPE} tasks are started by their index_parallel task only"
            )));
        }
        let parsed = task_spec(&Value::Object(object.clone()))?;
        let now = chrono::Utc::now().timestamp_millis();
        let id = match object.get("id") {
            None | Some(Value::Null) => {
                new_task_id(&task_type, &parsed.spec.datasource, now, &mut rand::rng())
            }
            Some(Value::String(id)) => check_task_id(id)?,
            Some(_) => return Err(Error::Invalid("task.id must be a string".into())),
        };
        let group_id = match object.get("groupId") {
            None | Some(Value::Null) => id.clone(),
            Some(Value::String(g)) => check_task_id(g)?,
            Some(_) => return Err(Error::Invalid("task.groupId must be a string".into())),
        };
        object.insert("id".into(), id.clone().into());
        object.insert("groupId".into(), group_id.clone().into());
        // As Druid shows a task's payload.
        object.insert("dataSource".into(), parsed.spec.datasource.clone().into());
        object.insert(
            "resource".into(),
            serde_json::json!({ "availabilityGroup": id, "requiredCapacity": 1 }),
        );
        let record = TaskRecord::submitted(
            &id,
            &group_id,
            &task_type,
            &parsed.spec.datasource,
            payload,
            now,
        );
        match task_status::create(self.store.as_ref(), &guard, &record).await {
            Err(Error::Invalid(_)) => {
                return Err(Error::Invalid(format!("Task [{id}] already exists!")));
            }
            other => other?,
        }
        tracing::info!("task {id} submitted");
        self.active().ids.insert(id.clone());
        self.wake.notify_one();
        Ok(id)
    }

    /// `POST /druid/indexer/v1/task/{id}/shutdown`: a task that has not ended fails
    /// now, publishes nothing, and its worker stops its process.
    pub async fn shutdown(&self, id: &str) -> Result<()> {
        let guard = self.guard()?;
        let turn = self.turn(id);
        let _turn = turn.lock().await;
        let Some((record, _)) = task_status::get(self.store.as_ref(), id).await? else {
            return Err(Error::Invalid(format!(
                "Cannot find any task with id: [{id}]"
            )));
        };
        if record.state.is_complete() {
            return Ok(());
        }
        tracing::info!("task {id}: shutdown requested");
        self.finish(
            &guard,
            &record,
            TaskState::Failed,
            Some(SHUTDOWN_MESSAGE.into()),
            None,
        )
        .await?;
        self.wake.notify_one();
        Ok(())
    }
}
