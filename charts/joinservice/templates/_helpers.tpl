{{/* Names and labels shared by every object of the chart. */}}

{{- define "joinservice.name" -}}
joinservice
{{- end }}

{{- define "joinservice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "joinservice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "joinservice.labels" -}}
{{ include "joinservice.selectorLabels" . }}
app.kubernetes.io/part-of: constellation
app.kubernetes.io/component: joinservice
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "joinservice.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
