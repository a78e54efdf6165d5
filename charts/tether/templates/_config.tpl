{{/* The TOML every role reads; strings go through toJson (a JSON string is a TOML basic string). */}}
{{- define "tether.config" -}}
# Rendered by the tether Helm chart (release {{ .Release.Name }}); one file for every role.
# Each key can be overridden by TETHER_<SECTION>_<KEY>.

[nats]
{{- if not .Values.nats.urlFromSecret.name }}
url = {{ .Values.nats.url | toJson }}
{{- else }}
# url: from Secret {{ .Values.nats.urlFromSecret.name }} (TETHER_NATS_URL)
{{- end }}
replicas = {{ int .Values.nats.replicas }}
kv_bucket = {{ .Values.nats.kvBucket | toJson }}
ack_wait_seconds = {{ int .Values.nats.ackWaitSeconds }}

[redis]
{{- if not .Values.redis.urlFromSecret.name }}
url = {{ .Values.redis.url | toJson }}
{{- else }}
# url: from Secret {{ .Values.redis.urlFromSecret.name }} (TETHER_REDIS_URL)
{{- end }}

[auth]
grpc_addr = {{ include "tether.listen" (dict "root" . "port" .Values.auth.grpcPort) | toJson }}
url = {{ printf "http://%s:%d" (include "tether.roleHost" (dict "root" . "role" "auth")) (int .Values.auth.grpcPort) | toJson }}
# admin_key: from Secret {{ include "tether.adminKeySecret" . }} (TETHER_AUTH_ADMIN_KEY, auth pods only)

[thing]
grpc_addr = {{ include "tether.listen" (dict "root" . "port" .Values.thing.grpcPort) | toJson }}
url = {{ printf "http://%s:%d" (include "tether.roleHost" (dict "root" . "role" "thing")) (int .Values.thing.grpcPort) | toJson }}

{{- if .Values.command.enabled }}

[command]
grpc_addr = {{ include "tether.listen" (dict "root" . "port" .Values.command.grpcPort) | toJson }}
url = {{ printf "http://%s:%d" (include "tether.roleHost" (dict "root" . "role" "command")) (int .Values.command.grpcPort) | toJson }}
{{- end }}

[edge]
mqtt_addr = {{ include "tether.listen" (dict "root" . "port" .Values.edge.mqttPort) | toJson }}
max_payload_bytes = {{ int .Values.edge.maxPayloadBytes }}
workers = {{ int .Values.edge.workers }}
drain_seconds = {{ int .Values.edge.drainSeconds }}
heartbeat_ttl_seconds = {{ int .Values.edge.heartbeatTtlSeconds }}
{{- with .Values.edge.serverReference }}
server_reference = {{ . | toJson }}
{{- end }}

[gateway]
http_addr = {{ include "tether.listen" (dict "root" . "port" .Values.gateway.httpPort) | toJson }}
grpc_addr = {{ include "tether.listen" (dict "root" . "port" .Values.gateway.grpcPort) | toJson }}

[health]
addr = {{ include "tether.listen" (dict "root" . "port" .Values.health.port) | toJson }}
{{- end }}
