{{/* Names and labels shared by every object of the chart. */}}

{{- define "keyservice.name" -}}
keyservice
{{- end }}

{{- define "keyservice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyservice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keyservice.labels" -}}
{{ include "keyservice.selectorLabels" . }}
app.kubernetes.io/part-of: constellation
app.kubernetes.io/component: keyservice
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "keyservice.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
