-- Argo CD health check for mailroom.dev/EmailMessage
-- (resource.customizations.health.mailroom.dev_EmailMessage in argocd-cm).
-- Healthy once the server accepted the message (Sent, AlreadySent,
-- Delivered, Complained) or a dry run is done (DryRun); Degraded when it will not be delivered without a
-- person (Failed, Unknown, Bounced); Progressing while it waits or is sent.
-- A Warning condition (a bulk message sent without one-click unsubscribe)
-- is added to the message; the message stays Healthy.
local hs = { status = "Progressing", message = "waiting for the mailroom controller" }
if obj.status == nil then
  return hs
end

local function condition(wanted)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c ~= nil and c.reason ~= nil then
    if c.message ~= nil and c.message ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.reason
  end
  return fallback
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "the controller has not seen the latest spec yet"
  return hs
end

local phase = obj.status.phase
local sent = condition("Sent")
local delivered = condition("Delivered")
if phase == "Sent" or phase == "DryRun" then
  hs.status = "Healthy"
  hs.message = explain(sent, phase)
elseif phase == "Delivered" or phase == "Complained" then
  hs.status = "Healthy"
  hs.message = explain(delivered, phase)
elseif phase == "Bounced" then
  hs.status = "Degraded"
  hs.message = explain(delivered, phase)
elseif phase == "Failed" or phase == "Unknown" then
  hs.status = "Degraded"
  hs.message = explain(sent, phase)
else
  hs.message = explain(sent, hs.message)
end
local warning = condition("Warning")
if hs.status == "Healthy" and warning ~= nil and warning.status == "True" then
  hs.message = hs.message .. " (warning: " .. explain(warning, "Warning") .. ")"
end
return hs
