{{/*
The full name of every object: the release name when it already says "aftershock",
otherwise "<release>-aftershock". Truncated to 63 characters (DNS label).
*/}}
{{- define "aftershock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "aftershock" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-aftershock" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels. app.kubernetes.io/name is always "aftershock": the operator refuses
Campaign selectors that match it, so it must not be renamed.
*/}}
{{- define "aftershock.selectorLabels" -}}
app.kubernetes.io/name: aftershock
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "aftershock.labels" -}}
{{ include "aftershock.selectorLabels" . }}
app.kubernetes.io/part-of: aftershock
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "aftershock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aftershock.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aftershock.claimName" -}}
{{- default (printf "%s-ledger" (include "aftershock.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{- define "aftershock.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
RBAC rules on the objects of a watched namespace, shared by the cluster-wide ClusterRole
and the per-namespace Roles (docs/adr/0004-rbac-and-scoping.md). No secrets, no configmaps,
no wildcards.
*/}}
{{- define "aftershock.namespacedRules" -}}
# The Campaigns; kopf patches metadata (finalizer, progress annotations).
- apiGroups: ["aftershock.dev"]
  resources: ["campaigns"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["aftershock.dev"]
  resources: ["campaigns/status"]
  verbs: ["get", "patch", "update"]
# Events on Campaigns.
- apiGroups: [""]
  resources: ["events"]
  # list and watch: the remediator's Events (spec.remediator.signals).
  verbs: ["create", "patch", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The subject's pods: observed, and deleted as victims.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# What a subject's URL names: read before connecting, ExternalName refused.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get"]
# Per-subject locks, in the Campaign's namespace.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The remediator of baseline Campaigns: only its scale, nothing else of the workload.
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch", "update"]
# The remediator's own metadata: a scaled-down remediator carries the replicas to restore
# (annotations aftershock.dev/original-replicas, label aftershock.dev/scaled-down), and the
# sweeper lists the marked ones to restore those a gone Campaign left at 0. Merge patches of
# metadata only; nothing else of the workload is changed.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "patch"]
{{- end -}}

{{- define "aftershock.crdRules" -}}
# kopf checks that the resources it serves exist.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# Whether a Campaign's author may do what the Campaign makes the operator do (ADR 0012).
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end -}}

{{/* The operator's ServiceAccount as the API server names its user. */}}
{{- define "aftershock.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "aftershock.serviceAccountName" .) -}}
{{- end -}}
