{{- define "mailroom.labels" -}}
app.kubernetes.io/name: mailroom
app.kubernetes.io/part-of: mailroom
{{- end -}}
