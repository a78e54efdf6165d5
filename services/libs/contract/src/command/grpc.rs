//! [`CommandService`] over gRPC: the client the gateway holds in cluster mode, and the server
//! adapter the command role serves. Both convert at the boundary with the `wire` conversions.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};
use tether_model::{DeviceKey, ProductKey};
use tether_proto::v1 as pb;
use tether_proto::v1::command_client::CommandClient;
use tether_proto::v1::invoke_service_response::Invocation as PbInvocation;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::wire;
use super::{Command, CommandService, Invocation, RrpcOutcome, SendOptions};
use crate::ServiceError;
use crate::thing::wire::{device_key, json_object, json_value, product_key};

/// The command service reached over gRPC.
#[derive(Clone)]
pub struct CommandGrpcClient {
    client: CommandClient<Channel>,
}

/// Serves a [`CommandService`] as the `tether.v1.Command` gRPC service.
pub struct CommandGrpcServer {
    inner: Arc<dyn CommandService>,
}

// === impl CommandGrpcClient ===

impl CommandGrpcClient {
    /// A client for `url` (`http://host:port`); connects lazily and reconnects by itself.
    pub fn new(url: &str) -> Result<Self, ServiceError> {
        let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| ServiceError::invalid("command url", e))?;
        let channel = endpoint.connect_timeout(std::time::Duration::from_secs(5)).connect_lazy();
        Ok(Self { client: CommandClient::new(channel) })
    }

    fn client(&self) -> CommandClient<Channel> {
        self.client.clone()
    }
}

fn status(s: Status) -> ServiceError {
    ServiceError::from_status(&s)
}

/// A reply the client cannot read is the server's fault, not the caller's.
fn bad_reply(e: ServiceError) -> ServiceError {
    ServiceError::Internal(format!("unreadable reply from command: {e}"))
}

fn command(response: pb::CommandResponse) -> Result<Command, ServiceError> {
    let command = response.command.ok_or_else(|| ServiceError::invalid("command", "missing"));
    command.and_then(Command::try_from).map_err(bad_reply)
}

#[async_trait]
impl CommandService for CommandGrpcClient {
    async fn set_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
        options: SendOptions,
    ) -> Result<Command, ServiceError> {
        let request = pb::SetPropertiesRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            items_json: Value::Object(items).to_string(),
            ttl_ms: options.ttl_ms,
        };
        command(self.client().set_properties(request).await.map_err(status)?.into_inner())
    }

    async fn invoke_service(
        &self,
        device: &DeviceKey,
        identifier: &str,
        args: Value,
        timeout_ms: Option<u32>,
        options: SendOptions,
    ) -> Result<Invocation, ServiceError> {
        let request = pb::InvokeServiceRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            identifier: identifier.to_owned(),
            args_json: args.to_string(),
            timeout_ms,
            ttl_ms: options.ttl_ms,
        };
        let response = self.client().invoke_service(request).await.map_err(status)?.into_inner();
        match response.invocation {
            Some(PbInvocation::Async(c)) => Ok(Invocation::Async(Command::try_from(c).map_err(bad_reply)?)),
            Some(PbInvocation::Sync(s)) => Ok(Invocation::Sync {
                rrpc_code: wire::rrpc_code(s.rrpc_code).map_err(bad_reply)?,
                code: s.code,
                data: s.data_json.as_deref().map(|d| json_value("data", d)).transpose().map_err(bad_reply)?,
                message_id: s.message_id,
            }),
            None => Err(bad_reply(ServiceError::invalid("invocation", "missing"))),
        }
    }

    async fn rrpc(
        &self,
        device: &DeviceKey,
        payload: Bytes,
        timeout_ms: u32,
        topic: Option<String>,
    ) -> Result<RrpcOutcome, ServiceError> {
        let request = pb::RrpcCallRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            payload: payload.into(),
            timeout_ms,
            topic,
        };
        let response = self.client().rrpc(request).await.map_err(status)?.into_inner();
        RrpcOutcome::try_from(response).map_err(bad_reply)
    }

    async fn publish(
        &self,
        product_key: &ProductKey,
        topic_full_name: &str,
        payload: Bytes,
        qos: u8,
    ) -> Result<String, ServiceError> {
        let request = pb::PublishRequest {
            product_key: product_key.to_string(),
            topic_full_name: topic_full_name.to_owned(),
            payload: payload.into(),
            qos: qos.into(),
        };
        Ok(self.client().publish(request).await.map_err(status)?.into_inner().message_id)
    }

    async fn broadcast(
        &self,
        product_key: &ProductKey,
        payload: Bytes,
        topic: Option<String>,
    ) -> Result<String, ServiceError> {
        let request = pb::BroadcastRequest { product_key: product_key.to_string(), payload: payload.into(), topic };
        Ok(self.client().broadcast(request).await.map_err(status)?.into_inner().message_id)
    }

    async fn get_command(&self, message_id: &str) -> Result<Command, ServiceError> {
        let request = pb::GetCommandRequest { message_id: message_id.to_owned() };
        command(self.client().get_command(request).await.map_err(status)?.into_inner())
    }

    async fn list_commands(&self, device: &DeviceKey) -> Result<Vec<Command>, ServiceError> {
        let request = pb::ListCommandsRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
        };
        let response = self.client().list_commands(request).await.map_err(status)?.into_inner();
        response.commands.into_iter().map(|c| Command::try_from(c).map_err(bad_reply)).collect()
    }
}

// === impl CommandGrpcServer ===

impl CommandGrpcServer {
    pub fn new(inner: Arc<dyn CommandService>) -> Self {
        Self { inner }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> pb::command_server::CommandServer<Self> {
        pb::command_server::CommandServer::new(self)
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn to_status(e: ServiceError) -> Status {
    e.to_status()
}

fn command_reply(command: Command) -> GrpcResult<pb::CommandResponse> {
    Ok(Response::new(pb::CommandResponse { command: Some(command.into()) }))
}

#[async_trait]
impl pb::command_server::Command for CommandGrpcServer {
    async fn set_properties(&self, req: Request<pb::SetPropertiesRequest>) -> GrpcResult<pb::CommandResponse> {
        let req = req.into_inner();
        let device = device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let items = json_object("items", &req.items_json).map_err(to_status)?;
        let options = SendOptions { ttl_ms: req.ttl_ms };
        command_reply(self.inner.set_properties(&device, items, options).await.map_err(to_status)?)
    }

    async fn invoke_service(&self, req: Request<pb::InvokeServiceRequest>) -> GrpcResult<pb::InvokeServiceResponse> {
        let req = req.into_inner();
        let device = device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let args = wire::args(&req.args_json).map_err(to_status)?;
        let options = SendOptions { ttl_ms: req.ttl_ms };
        let invocation = self
            .inner
            .invoke_service(&device, &req.identifier, args, req.timeout_ms, options)
            .await
            .map_err(to_status)?;
        let invocation = match invocation {
            Invocation::Async(command) => PbInvocation::Async(command.into()),
            Invocation::Sync { message_id, rrpc_code, code, data } => PbInvocation::Sync(pb::SyncInvocation {
                message_id,
                rrpc_code: pb::RrpcCode::from(rrpc_code).into(),
                code,
                data_json: data.map(|d| d.to_string()),
            }),
        };
        Ok(Response::new(pb::InvokeServiceResponse { invocation: Some(invocation) }))
    }

    async fn rrpc(&self, req: Request<pb::RrpcCallRequest>) -> GrpcResult<pb::RrpcCallResponse> {
        let req = req.into_inner();
        let device = device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let outcome =
            self.inner.rrpc(&device, Bytes::from(req.payload), req.timeout_ms, req.topic).await.map_err(to_status)?;
        Ok(Response::new(outcome.into()))
    }

    async fn publish(&self, req: Request<pb::PublishRequest>) -> GrpcResult<pb::MessageIdResponse> {
        let req = req.into_inner();
        let product_key = product_key(&req.product_key).map_err(to_status)?;
        let qos = u8::try_from(req.qos).map_err(|_| to_status(ServiceError::invalid("qos", "must be 0 or 1")))?;
        let payload = Bytes::from(req.payload);
        let message_id =
            self.inner.publish(&product_key, &req.topic_full_name, payload, qos).await.map_err(to_status)?;
        Ok(Response::new(pb::MessageIdResponse { message_id }))
    }

    async fn broadcast(&self, req: Request<pb::BroadcastRequest>) -> GrpcResult<pb::MessageIdResponse> {
        let req = req.into_inner();
        let product_key = product_key(&req.product_key).map_err(to_status)?;
        let message_id =
            self.inner.broadcast(&product_key, Bytes::from(req.payload), req.topic).await.map_err(to_status)?;
        Ok(Response::new(pb::MessageIdResponse { message_id }))
    }

    async fn get_command(&self, req: Request<pb::GetCommandRequest>) -> GrpcResult<pb::CommandResponse> {
        command_reply(self.inner.get_command(&req.into_inner().message_id).await.map_err(to_status)?)
    }

    async fn list_commands(&self, req: Request<pb::ListCommandsRequest>) -> GrpcResult<pb::ListCommandsResponse> {
        let req = req.into_inner();
        let device = device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let commands = self.inner.list_commands(&device).await.map_err(to_status)?;
        Ok(Response::new(pb::ListCommandsResponse { commands: commands.into_iter().map(Into::into).collect() }))
    }
}
