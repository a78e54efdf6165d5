{{/* The roles this chart deploys, in a fixed order. */}}
{{- define "tether.roles" -}}
edge auth thing command gateway
{{- end }}

{{- define "tether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name. At most 52 characters, so "<fullname>-<role>" stays a valid
Service name (63); dots become dashes, because the pod name is the edge's node id (no dots allowed).
*/}}
{{- define "tether.fullname" -}}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- $full = .Release.Name }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- end }}
{{- $full | replace "." "-" | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "tether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "tether.labels" -}}
helm.sh/chart: {{ include "tether.chart" . }}
{{ include "tether.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tether
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels selecting every pod of the release. */}}
{{- define "tether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role's resources: (dict "root" $ "role" "edge"). */}}
{{- define "tether.roleLabels" -}}
{{ include "tether.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* Labels selecting one role's pods: (dict "root" $ "role" "edge"). */}}
{{- define "tether.roleSelectorLabels" -}}
{{ include "tether.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* A role's resource name: (dict "root" $ "role" "edge"). */}}
{{- define "tether.roleName" -}}
{{- printf "%s-%s" (include "tether.fullname" .root) .role }}
{{- end }}

{{/* Where the other roles reach a role's Service: (dict "root" $ "role" "auth"). */}}
{{- define "tether.roleHost" -}}
{{- printf "%s.%s.svc.%s" (include "tether.roleName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{- define "tether.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tether.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tether.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* The Secret holding the admin key, and its key. */}}
{{- define "tether.adminKeySecret" -}}
{{- default (printf "%s-admin" (include "tether.fullname" .)) .Values.adminKey.existingSecret }}
{{- end }}

{{- define "tether.adminKeySecretKey" -}}
{{- if .Values.adminKey.existingSecret }}
{{- .Values.adminKey.existingSecretKey }}
{{- else -}}
admin-key
{{- end }}
{{- end }}

{{/* host:port a role listens on inside its pod. */}}
{{- define "tether.listen" -}}
{{- $host := .root.Values.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" (trimAll "[]" $host) (int .port) }}
{{- else }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}
{{- end }}

{{/*
The edge's termination grace period: explicit (and longer than preStop + drain) or preStop +
drain + 30 s.
*/}}
{{- define "tether.edgeGracePeriod" -}}
{{- $edge := .Values.edge }}
{{- $needed := add (int $edge.preStopSleepSeconds) (int $edge.drainSeconds) }}
{{- if kindIs "invalid" $edge.terminationGracePeriodSeconds }}
{{- add $needed 30 }}
{{- else if le (int $edge.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "edge.terminationGracePeriodSeconds (%d) must exceed edge.preStopSleepSeconds + edge.drainSeconds (%d), or the edge is killed while it drains" (int $edge.terminationGracePeriodSeconds) $needed) }}
{{- else }}
{{- int $edge.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Probe settings of a role: the role's overrides over the top-level ones. */}}
{{- define "tether.probes" -}}
{{- $role := index .root.Values .role }}
{{- $probes := mustMergeOverwrite (deepCopy .root.Values.probes) (deepCopy (default dict $role.probes)) -}}
startupProbe:
  httpGet:
    path: /healthz
    port: health
  {{- toYaml $probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  {{- toYaml $probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: health
  {{- toYaml $probes.readiness | nindent 2 }}
{{- end }}
