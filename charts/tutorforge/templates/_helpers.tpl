{{/* Names */}}
{{- define "tutorforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tutorforge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tutorforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tutorforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: pass (dict "ctx" $ "component" "retrieval") */}}
{{- define "tutorforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tutorforge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tutorforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tutorforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tutorforge
{{- end }}

{{/* Images: pass an image dict (repository, tag, digest) and a default tag */}}
{{- define "tutorforge.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag) }}
{{- end }}
{{- end }}

{{- define "tutorforge.image" -}}
{{- include "tutorforge.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{- define "tutorforge.gpuImage" -}}
{{- $tag := default (printf "%s-gpu" (default .Chart.AppVersion .Values.image.tag)) .Values.image.gpuTag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The full gRPC service name each tutorforge service registers in the health service. */}}
{{- define "tutorforge.grpcServiceName" -}}
{{- $names := dict "retrieval" "RetrievalService" "datasets" "DatasetService" "training" "TrainingService" "optimization" "OptimizationService" "inference" "InferenceService" }}
{{- printf "tutorforge.v1.%s" (get $names .) }}
{{- end }}

{{/* Component names: pass (dict "ctx" $ "component" "retrieval") */}}
{{- define "tutorforge.componentName" -}}
{{- printf "%s-%s" (include "tutorforge.fullname" .ctx) .component }}
{{- end }}

{{- define "tutorforge.rayClusterName" -}}
{{- printf "%s-ray" (include "tutorforge.fullname" .) }}
{{- end }}

{{- define "tutorforge.apiTokenSecretName" -}}
{{- default (printf "%s-api-token" (include "tutorforge.fullname" .)) .Values.apiToken.existingSecret }}
{{- end }}

{{- define "tutorforge.qdrantApiKeySecretName" -}}
{{- default (printf "%s-qdrant-api-key" (include "tutorforge.fullname" .)) .Values.qdrant.apiKey.existingSecret }}
{{- end }}

{{/* The chart's own Qdrant always has a key (unless apiKey.enabled=false); an external one when given one. */}}
{{- define "tutorforge.qdrantApiKeyEnabled" -}}
{{- if and (eq .Values.qdrant.mode "statefulset") .Values.qdrant.apiKey.enabled }}true
{{- else if and (eq .Values.qdrant.mode "external") (or .Values.qdrant.apiKey.value .Values.qdrant.apiKey.existingSecret) }}true
{{- end }}
{{- end }}

{{- define "tutorforge.storeClaimName" -}}
{{- default (printf "%s-store" (include "tutorforge.fullname" .)) .Values.store.pvc.existingClaim }}
{{- end }}

{{- define "tutorforge.objectStoreSecretName" -}}
{{- default (printf "%s-object-store" (include "tutorforge.fullname" .)) .Values.store.objectStore.existingSecret }}
{{- end }}

{{- define "tutorforge.qdrantUrl" -}}
{{- if eq .Values.qdrant.mode "external" }}
{{- required "qdrant.externalUrl is required when qdrant.mode=external" .Values.qdrant.externalUrl }}
{{- else }}
{{- printf "http://%s-qdrant:6333" (include "tutorforge.fullname" .) }}
{{- end }}
{{- end }}

{{- define "tutorforge.rayAddress" -}}
{{- if .Values.ray.enabled }}
{{- default (printf "ray://%s-head-svc:10001" (include "tutorforge.rayClusterName" .)) .Values.ray.address }}
{{- end }}
{{- end }}

{{/* The serving engine's URL as the inference service's settings expect it. */}}
{{- define "tutorforge.engineUrl" -}}
{{- $fullname := include "tutorforge.fullname" . }}
{{- if eq .Values.serving.engine "tgi" }}
{{- printf "http://%s-tgi:%d" $fullname (int .Values.serving.tgi.port) }}
{{- else if eq .Values.serving.engine "vllm" }}
{{- printf "http://%s-vllm:%d" $fullname (int .Values.serving.vllm.port) }}
{{- end }}
{{- end }}

{{/* TGI's LORA_ADAPTERS / vLLM's --lora-modules: name=/adapters/<name>/<version>, comma-separated. */}}
{{- define "tutorforge.loraAdapters" -}}
{{- $items := list }}
{{- range .Values.serving.adapters }}
{{- $items = append $items (printf "%s=/adapters/%s/%s" .name .name (required "serving.adapters[].version is required (v1, v2, ...)" .version)) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/* Checks that fail the render with a message saying what to fix. */}}
{{- define "tutorforge.validate" -}}
{{- if not (has .Values.store.type (list "pvc" "objectStore")) }}
{{- fail "store.type must be pvc or objectStore" }}
{{- end }}
{{- if and (eq .Values.store.type "objectStore") (not .Values.store.objectStore.url) }}
{{- fail "store.objectStore.url is required when store.type=objectStore (e.g. s3://bucket/tutorforge)" }}
{{- end }}
{{- if not (has .Values.qdrant.mode (list "statefulset" "external" "embedded")) }}
{{- fail "qdrant.mode must be statefulset, external or embedded" }}
{{- end }}
{{- if and (eq .Values.qdrant.mode "embedded") (gt (int .Values.services.retrieval.replicas) 1) }}
{{- fail "qdrant.mode=embedded keeps the index inside one retrieval pod: set services.retrieval.replicas=1 or use qdrant.mode=statefulset" }}
{{- end }}
{{- if and (eq .Values.qdrant.mode "embedded") (ne .Values.store.type "pvc") }}
{{- fail "qdrant.mode=embedded keeps its index on the store volume: it needs store.type=pvc" }}
{{- end }}
{{- if not (has .Values.serving.engine (list "embedded" "tgi" "vllm")) }}
{{- fail "serving.engine must be embedded, tgi or vllm" }}
{{- end }}
{{- if and (ne .Values.serving.engine "embedded") (not (has .Values.serving.model.source (list "image" "pvc"))) }}
{{- fail "serving.model.source must be image or pvc" }}
{{- end }}
{{- if and (ne .Values.serving.engine "embedded") (eq .Values.serving.model.source "pvc") (not .Values.serving.model.existingClaim) }}
{{- fail "serving.model.existingClaim is required when serving.model.source=pvc" }}
{{- end }}
{{- end }}

{{/* Volumes every tutorforge container needs with a read-only root filesystem. */}}
{{- define "tutorforge.writableVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 2Gi
- name: home
  emptyDir:
    sizeLimit: 1Gi
- name: cache
  emptyDir:
    sizeLimit: 2Gi
{{- if eq .Values.store.type "pvc" }}
- name: store
  persistentVolumeClaim:
    claimName: {{ include "tutorforge.storeClaimName" . }}
{{- end }}
{{- end }}

{{- define "tutorforge.writableMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/tutorforge
- name: cache
  mountPath: /var/cache/tutorforge
{{- if eq .Values.store.type "pvc" }}
- name: store
  mountPath: /data
{{- end }}
{{- end }}

{{/* Settings as environment: the ConfigMap, the API token and the store's credentials. */}}
{{- define "tutorforge.envFrom" -}}
- configMapRef:
    name: {{ include "tutorforge.fullname" . }}-settings
{{- if eq .Values.store.type "objectStore" }}
- secretRef:
    name: {{ include "tutorforge.objectStoreSecretName" . }}
{{- end }}
{{- end }}

{{- define "tutorforge.secretEnv" -}}
{{- if .Values.apiToken.enabled }}
- name: TUTORFORGE_SERVER__API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tutorforge.apiTokenSecretName" . }}
      key: {{ .Values.apiToken.existingSecretKey }}
{{- range $scope, $value := .Values.apiToken.scoped }}
{{- if or $value $.Values.apiToken.existingSecret }}
- name: TUTORFORGE_SERVER__TOKENS__{{ upper $scope }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tutorforge.apiTokenSecretName" $ }}
      key: {{ $scope }}
      # A Secret you manage may leave a scope out.
      optional: {{ not $value }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: TUTORFORGE_TLS__CERT_FILE
  value: /etc/tutorforge/tls/tls.crt
- name: TUTORFORGE_TLS__KEY_FILE
  value: /etc/tutorforge/tls/tls.key
- name: TUTORFORGE_TLS__CA_FILE
  value: /etc/tutorforge/tls/ca.crt
- name: TUTORFORGE_TLS__REQUIRE_CLIENT_CERT
  value: {{ .Values.tls.requireClientCert | quote }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by every pod of the chart. */}}
{{- define "tutorforge.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* NetworkPolicy peers outside the cluster (object store, external Qdrant). */}}
{{- define "tutorforge.externalPeers" -}}
{{- range .Values.networkPolicy.externalEgress.cidrs }}
- ipBlock:
    cidr: {{ . }}
    {{- with $.Values.networkPolicy.externalEgress.except }}
    except:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Egress every tutorforge pod needs: cluster DNS and, with an object store, the store. */}}
{{- define "tutorforge.egressCommon" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if eq .Values.store.type "objectStore" }}
- to:
    {{- include "tutorforge.externalPeers" . | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.externalEgress.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}

{{/* A tutorforge service container's own environment: (dict "ctx" $ "service" "inference" "httpPort" 8000) */}}
{{- define "tutorforge.serviceEnv" -}}
{{- include "tutorforge.secretEnv" .ctx }}
{{- /* Only retrieval talks to Qdrant: the other pods never see its key. */}}
{{- if and (eq .service "retrieval") (include "tutorforge.qdrantApiKeyEnabled" .ctx) }}
- name: TUTORFORGE_RETRIEVAL__QDRANT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tutorforge.qdrantApiKeySecretName" .ctx }}
      key: {{ .ctx.Values.qdrant.apiKey.existingSecretKey }}
{{- end }}
{{- if eq .service "inference" }}
- name: TUTORFORGE_SERVER__HTTP_PORT
  value: {{ .httpPort | quote }}
{{- end }}
{{- range $key, $value := (get .ctx.Values.services .service).env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
