{{/* Names and labels shared by every object of the chart. */}}

{{- define "verificationservice.name" -}}
verificationservice
{{- end }}

{{- define "verificationservice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "verificationservice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "verificationservice.labels" -}}
{{ include "verificationservice.selectorLabels" . }}
app.kubernetes.io/part-of: constellation
app.kubernetes.io/component: verificationservice
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "verificationservice.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
