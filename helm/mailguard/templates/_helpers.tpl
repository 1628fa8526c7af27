{{/* Names and labels. */}}
{{- define "mailguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mailguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mailguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mailguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mailguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mailguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mailguard.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.create -}}
{{- include "mailguard.fullname" . -}}
{{- end -}}
{{- end -}}

{{/*
One TOML value. Strings are JSON-quoted (JSON escapes are valid TOML basic-string escapes);
numbers print as integers when they are whole (Helm reads every YAML number as float64, and
mailguard's integer fields reject 100.0); maps become inline tables with quoted keys (librdkafka
property names contain dots).
*/}}
{{- define "mailguard.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- $v | toJson -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) -}}
{{- if eq (float64 $v) (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha -}}{{- if $i }}, {{ end -}}{{ $k | toJson }} = {{ include "mailguard.tomlValue" (index $v $k) }}{{- end -}} }
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{ include "mailguard.tomlValue" $e }}{{- end -}}]
{{- else -}}
{{- fail (printf "config: cannot render %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/*
mailguard.toml: `config` with the fields the chart owns set, one [section] per key, null values
and empty tables left out (mailguard's defaults apply), the registry only when it has a url.
*/}}
{{- define "mailguard.toml" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $state := default (dict) $cfg.state -}}
{{- $_ := set $state "dir" "/var/lib/mailguard/state" -}}
{{- $_ := set $cfg "state" $state -}}
{{- $_ := set $cfg "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port))) -}}
{{- if and (hasKey $cfg "registry") (not (and $cfg.registry $cfg.registry.url)) -}}
{{- $_ := unset $cfg "registry" -}}
{{- end -}}
# Rendered by the mailguard chart from `config` in its values; kafka.instance_id comes from the
# environment (MAILGUARD_KAFKA__INSTANCE_ID, the pod's ordinal).
{{- range $section := keys $cfg | sortAlpha }}
{{- $fields := index $cfg $section }}
{{- if not (kindIs "map" $fields) }}
{{- fail (printf "config.%s must be a table" $section) }}
{{- end }}
[{{ $section }}]
{{- range $key := keys $fields | sortAlpha }}
{{- $v := index $fields $key }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "map" $v) (empty $v))) }}
{{ $key }} = {{ include "mailguard.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
{{ end -}}
