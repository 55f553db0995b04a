{{- define "chatplatform.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "chatplatform.labels" -}}
app.kubernetes.io/name: chatplatform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "chatplatform.selector" -}}
app.kubernetes.io/name: chatplatform
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chatplatform.secretName" -}}
{{- if .Values.secret.existingSecret -}}{{ .Values.secret.existingSecret }}{{- else -}}{{ .Release.Name }}-secrets{{- end -}}
{{- end -}}

{{- define "chatplatform.webImage" -}}
{{ .Values.images.web.repository }}:{{ .Values.images.web.tag }}
{{- end -}}

{{- define "chatplatform.inferenceImage" -}}
{{ .Values.images.inference.repository }}:{{ .Values.images.inference.tag }}
{{- end -}}

{{/* Connection parts (the image entrypoint quotes them into URLs) and the settings. */}}
{{- define "chatplatform.redisEnv" -}}
- {name: REDIS_HOST, value: {{ .Values.redis.host | quote }}}
- {name: REDIS_PORT, value: {{ .Values.redis.port | quote }}}
- {name: REDIS_DB, value: {{ .Values.redis.db | quote }}}
- {name: REDIS_TLS, value: {{ .Values.redis.tls | quote }}}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "chatplatform.secretName" . }}, key: REDIS_PASSWORD}}
{{- end -}}

{{- define "chatplatform.djangoEnv" -}}
- {name: DJANGO_SETTINGS_MODULE, value: chatplatform.settings.production}
- {name: ALLOWED_HOSTS, value: {{ .Values.host | quote }}}
- {name: CSRF_TRUSTED_ORIGINS, value: {{ printf "https://%s" .Values.host | quote }}}
- {name: POSTGRES_HOST, value: {{ .Values.postgres.host | quote }}}
- {name: POSTGRES_PORT, value: {{ .Values.postgres.port | quote }}}
- {name: POSTGRES_DB, value: {{ .Values.postgres.database | quote }}}
- {name: POSTGRES_USER, value: {{ .Values.postgres.user | quote }}}
- name: POSTGRES_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "chatplatform.secretName" . }}, key: POSTGRES_PASSWORD}}
- name: SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "chatplatform.secretName" . }}, key: SECRET_KEY}}
- name: METRICS_BEARER_TOKEN
  valueFrom: {secretKeyRef: {name: {{ include "chatplatform.secretName" . }}, key: METRICS_BEARER_TOKEN}}
{{ include "chatplatform.redisEnv" . }}
{{- end -}}

{{- define "chatplatform.envFrom" -}}
envFrom:
  - configMapRef: {name: {{ .Release.Name }}-settings}
{{- end -}}

{{- define "chatplatform.celeryPing" -}}
{{/* Liveness of a Celery worker: it answers a control ping (through the broker). */}}
exec:
  command: ["sh", "-c", "python -m chatplatform.container celery -A {{ .app }} inspect ping -d {{ .node }}@$HOSTNAME --timeout 10"]
{{- end -}}
