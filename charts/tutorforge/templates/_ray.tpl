{{/* The pod template of a Ray node: (dict "ctx" $ "name" "ray-head" "image" ... "resources" ... "node" values "ports" list "probePath" ... "probePort" ...) */}}
{{- define "tutorforge.rayPodTemplate" -}}
{{- $ := .ctx }}
metadata:
  labels:
    {{- include "tutorforge.labels" (dict "ctx" $ "component" "ray") | nindent 4 }}
    tutorforge.dev/ray-node: {{ .name }}
spec:
  {{- include "tutorforge.podCommon" $ | trim | nindent 2 }}
  serviceAccountName: {{ include "tutorforge.serviceAccountName" $ }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  containers:
    - name: {{ .name }}
      image: {{ .image }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      {{- with .ports }}
      ports:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      envFrom:
        {{- include "tutorforge.envFrom" $ | nindent 8 }}
      # Ray Train workers import tutorforge and read the same settings and store as the services.
      env:
        - name: RAY_USAGE_STATS_ENABLED
          value: "0"
      # Explicit probes: KubeRay's default probes shell out to wget, which the image does not carry.
      readinessProbe:
        httpGet:
          path: {{ .probePath }}
          port: {{ .probePort }}
        initialDelaySeconds: 10
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 10
      livenessProbe:
        httpGet:
          path: {{ .probePath }}
          port: {{ .probePort }}
        initialDelaySeconds: 30
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 6
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "tutorforge.writableMounts" $ | nindent 8 }}
        - name: shm
          mountPath: /dev/shm
  volumes:
    {{- include "tutorforge.writableVolumes" $ | nindent 4 }}
    # Ray's object store lives in /dev/shm.
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: 2Gi
  {{- with .node.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .node.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
