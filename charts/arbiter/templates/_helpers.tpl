{{/* The prefix of every object's name: the release name when it already
contains the chart's ("arbiter"), so a release named arbiter names its objects
as the release manifests do (arbiter-controller-manager, ...). */}}
{{- define "arbiter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "arbiter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "arbiter.serviceAccountName" -}}
{{- include "arbiter.fullname" . }}-controller-manager
{{- end -}}

{{- define "arbiter.webhookServiceName" -}}
{{- include "arbiter.fullname" . }}-webhook-service
{{- end -}}

{{- define "arbiter.webhookSecretName" -}}
{{- include "arbiter.fullname" . }}-webhook-server-cert
{{- end -}}

{{- define "arbiter.certificateName" -}}
{{- include "arbiter.fullname" . }}-serving-cert
{{- end -}}

{{- define "arbiter.mutatingWebhookName" -}}
{{- include "arbiter.fullname" . }}-mutating-webhook-configuration
{{- end -}}

{{- define "arbiter.validatingWebhookName" -}}
{{- include "arbiter.fullname" . }}-validating-webhook-configuration
{{- end -}}

{{/* Labels of every object. */}}
{{- define "arbiter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "arbiter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: arbiter
{{- end -}}

{{/* Labels that select the manager's pods; they never change across upgrades
(a Deployment's selector is immutable). */}}
{{- define "arbiter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arbiter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end -}}

{{/* The cert-manager Certificate whose CA cainjector injects into the webhook
configurations. */}}
{{- define "arbiter.caInjectionAnnotation" -}}
{{- if eq .Values.webhook.certManagement "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "arbiter.certificateName" . }}
{{- end }}
{{- end -}}
